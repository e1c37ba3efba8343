//! The SV2 authority key file: what `hashshift keygen` writes and an SV2 `[[downstream]]`
//! listener reads (`authority_key_file`) to sign its Noise certificates.
//!
//! Format: a small TOML file with both halves in the base58check forms SRI uses (sv2-spec 04
//! "Certificate format"; see [`hashshift_protocol::noise::keys`]):
//!
//! ```toml
//! # hashshift SV2 authority key pair. Keep this file secret.
//! authority_secret_key = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n"
//! authority_public_key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
//! ```
//!
//! The public key is the string miners and translators paste into their configs; keeping it in
//! the file lets an operator read it back, and loading checks that it matches the secret (a
//! mismatch would make every miner reject the proxy). The file is created with mode 0600 and
//! never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use hashshift_protocol::noise::{AuthorityKeypair, AuthorityPublicKey, SecretKey};
use serde::Deserialize;

/// Why a key file could not be written or used. Local configuration problems only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or creating the file failed (including: it already exists).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, or unknown / missing keys.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: toml::de::Error,
    },
    /// A key string is not a valid base58check key.
    #[error("{path}: {key}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Which entry.
        key: &'static str,
        /// Why.
        source: hashshift_protocol::noise::KeyError,
    },
    /// The public key does not belong to the secret key.
    #[error("{path}: authority_public_key does not match authority_secret_key")]
    Mismatch {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    authority_secret_key: String,
    authority_public_key: String,
}

/// The file's text for `pair`.
pub fn render(pair: &AuthorityKeypair) -> String {
    format!(
        "# hashshift SV2 authority key pair, written by `hashshift keygen`. Keep this file secret.\n\
         # Miners and translators pin the public key (authority_pubkey in SRI configs).\n\
         authority_secret_key = \"{}\"\n\
         authority_public_key = \"{}\"\n",
        pair.secret_key().to_base58check(),
        pair.public_key().to_base58check(),
    )
}

/// Parses the file's text (`path` only names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<AuthorityKeypair, KeyFileError> {
    let file: KeyFile = toml::from_str(text).map_err(|source| KeyFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let key_err = |key: &'static str| {
        move |source| KeyFileError::Key {
            path: path.to_owned(),
            key,
            source,
        }
    };
    let secret: SecretKey = file
        .authority_secret_key
        .parse()
        .map_err(key_err("authority_secret_key"))?;
    let public: AuthorityPublicKey = file
        .authority_public_key
        .parse()
        .map_err(key_err("authority_public_key"))?;
    AuthorityKeypair::from_parts(&secret, &public).map_err(|_| KeyFileError::Mismatch {
        path: path.to_owned(),
    })
}

/// Reads and checks a key file.
pub fn load(path: &Path) -> Result<AuthorityKeypair, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Writes a new key pair to `path` (which must not exist; created with mode 0600) and returns
/// its public key.
pub fn generate(path: &Path) -> Result<AuthorityPublicKey, KeyFileError> {
    let pair = AuthorityKeypair::generate(&mut rand::rng());
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(render(&pair).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(pair.public_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let pair = AuthorityKeypair::generate(&mut rand::rng());
        let text = render(&pair);
        let back = parse(&text, Path::new("k")).unwrap();
        assert_eq!(back.public_key(), pair.public_key());

        let other = AuthorityKeypair::generate(&mut rand::rng());
        let mixed = text.replace(
            &pair.public_key().to_base58check(),
            &other.public_key().to_base58check(),
        );
        assert!(matches!(
            parse(&mixed, Path::new("k")),
            Err(KeyFileError::Mismatch { .. })
        ));
        assert!(matches!(
            parse("authority_secret_key = \"x\"\n", Path::new("k")),
            Err(KeyFileError::Parse { .. })
        ));
    }

    #[test]
    fn generate_creates_a_private_file_once() {
        let path = std::env::temp_dir().join(format!(
            "hashshift-keygen-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let public = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().public_key(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            matches!(generate(&path), Err(KeyFileError::Io { .. })),
            "never overwrites"
        );
        let _ = std::fs::remove_file(&path);
    }
}
