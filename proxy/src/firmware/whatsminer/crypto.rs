//! The cryptography of the Whatsminer API v2: md5-crypt (`$1$`) for the key and the token sign,
//! AES-256-ECB with zero padding and base64 for the privileged commands.
//!
//! From `get_token` (`time`, `salt`, `newsalt`) and the admin password:
//! - `key` = the hash part (after the last `$`) of md5-crypt(password, salt);
//! - AES key = SHA-256(`key`) (the 32 raw digest bytes);
//! - `sign` = the hash part of md5-crypt(`key` + `time`, newsalt), sent as `"token"`.
//!
//! md5-crypt is Poul-Henning Kamp's FreeBSD algorithm (as in glibc's `crypt` with a `$1$`
//! salt and `openssl passwd -1`), written here on the `md-5` crate.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use sha2::Sha256;

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// md5-crypt of `password` with `salt` (at most its first 8 bytes, up to a `$`), in the
/// usual form `$1$<salt>$<22 characters>`.
pub fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    let salt = salt.strip_prefix(b"$1$").unwrap_or(salt);
    let end = salt
        .iter()
        .take(8)
        .position(|&b| b == b'$')
        .unwrap_or(salt.len().min(8));
    let salt = &salt[..end];

    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }

    let mut out = String::with_capacity(3 + salt.len() + 1 + 22);
    out.push_str("$1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        let v = (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]);
        to64(v, 4);
    }
    to64(u32::from(fin[11]), 2);
    out
}

/// The hash part of [`md5_crypt`]: what follows the last `$`.
pub fn md5_crypt_hash(password: &[u8], salt: &[u8]) -> String {
    let full = md5_crypt(password, salt);
    full.rsplit('$').next().unwrap_or_default().to_owned()
}

/// What a `get_token` reply and the admin password give: the AES key and the token sign.
#[derive(Clone)]
pub struct TokenKeys {
    /// AES-256 key: SHA-256 of the md5-crypt hash of the password.
    pub aes_key: [u8; 32],
    /// The `"token"` field of privileged commands.
    pub sign: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    /// Derive the keys from the admin password and the `get_token` fields.
    pub fn derive(password: &str, time: &str, salt: &str, newsalt: &str) -> TokenKeys {
        let key = md5_crypt_hash(password.as_bytes(), salt.as_bytes());
        let aes_key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let sign = md5_crypt_hash(format!("{key}{time}").as_bytes(), newsalt.as_bytes());
        TokenKeys { aes_key, sign }
    }
}

/// AES-256-ECB of `plaintext` zero-padded to a multiple of 16 bytes, base64 (standard alphabet,
/// no line breaks).
pub fn encrypt(aes_key: &[u8; 32], plaintext: &[u8]) -> String {
    let cipher = Aes256::new(GenericArray::from_slice(aes_key));
    let mut buf = plaintext.to_vec();
    let padded = buf.len().div_ceil(16).max(1) * 16;
    buf.resize(padded, 0);
    for block in buf.chunks_exact_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    B64.encode(&buf)
}

/// The inverse of [`encrypt`]: base64-decode, AES-256-ECB-decrypt, drop the zero padding.
/// Refuses (with a reason) data that is not base64, not whole blocks, or longer than `max`
/// bytes once decoded.
pub fn decrypt(aes_key: &[u8; 32], data: &str, max: usize) -> Result<Vec<u8>, String> {
    // base64 is 4 characters per 3 bytes: refuse before decoding anything oversized.
    if data.len() / 4 * 3 > max.saturating_add(3) {
        return Err(format!("encrypted reply larger than {max} bytes"));
    }
    let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut buf = B64
        .decode(clean.as_bytes())
        .map_err(|e| format!("encrypted reply is not base64: {e}"))?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(format!(
            "encrypted reply is {} bytes, not whole AES blocks",
            buf.len()
        ));
    }
    let cipher = Aes256::new(GenericArray::from_slice(aes_key));
    for block in buf.chunks_exact_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    buf.truncate(end);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vectors, each also checked with `openssl passwd -1 -salt S P` and glibc's
    /// `crypt(P, "$1$S$")`:
    /// - `password`/`xxxxxxxx`: the example in OpenSSL's `openssl-passwd(1)` manual
    ///   (and OpenSSL's own `test/recipes/20-test_passwd.t`);
    /// - the `U*U*…` ones, the empty and the one-space password and `test`: passlib's
    ///   `md5_crypt` `known_correct_hashes` (`passlib/tests/test_handlers.py`, the first ones
    ///   taken from John the Ripper 1.7.9);
    /// - `admin`/`BQ5hoXV9`: the Whatsminer factory admin password with its fixed salt, whose
    ///   hash `RxmaDUO33TS7O26yeMHZ81` is published in reverse-engineering notes of btminer.
    #[test]
    fn md5_crypt_known_answers() {
        let cases: [(&str, &str, &str); 10] = [
            ("password", "xxxxxxxx", "$1$xxxxxxxx$UYCIxa628.9qXjpQCjM4a."),
            ("", "Eu.GHtia", "$1$Eu.GHtia$CFkL/nE1BYTlEPiVx1VWX0"),
            ("U*U*U*U*", "dXc3I7Rw", "$1$dXc3I7Rw$ctlgjDdWJLMT.qwHsWhXR1"),
            ("U*U***U", "dXc3I7Rw", "$1$dXc3I7Rw$94JPyQc/eAgQ3MFMCoMF.0"),
            ("*U*U*U*U", "eQT9Hwbt", "$1$eQT9Hwbt$XtuElNJD.eW5MN5UCWyTQ0"),
            (" ", "m/5ee7ol", "$1$m/5ee7ol$bZn0kIBFipq39e.KDXX8I0"),
            ("test", "ec6XvcoW", "$1$ec6XvcoW$ghEtNK2U1MC5l.Dwgi3020"),
            ("admin", "BQ5hoXV9", "$1$BQ5hoXV9$RxmaDUO33TS7O26yeMHZ81"),
            (
                "a password longer than sixteen bytes, thirty-two+",
                "abcdefgh",
                "$1$abcdefgh$U6UlaXDhfc6xcU2u2q9Vf/",
            ),
            // Salts are cut at 8 characters (glibc: `crypt("x", "$1$abcdefghijk$")`).
            ("x", "abcdefghijk", "$1$abcdefgh$znAnv9M.XU2pRYfmSs46h/"),
        ];
        for (pw, salt, want) in cases {
            assert_eq!(md5_crypt(pw.as_bytes(), salt.as_bytes()), want, "{pw:?}");
        }
        assert_eq!(
            md5_crypt(b"password", b"$1$xxxxxxxx$"),
            "$1$xxxxxxxx$UYCIxa628.9qXjpQCjM4a."
        );
        assert_eq!(
            md5_crypt_hash(b"admin", b"BQ5hoXV9"),
            "RxmaDUO33TS7O26yeMHZ81"
        );
    }

    /// FIPS-197 Appendix C.3 (AES-256): the block cipher as we use it, one block, ECB.
    #[test]
    fn aes256_fips197_known_answer() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let pt: Vec<u8> = (0..16u8).map(|i| i * 0x11).collect();
        let b64 = encrypt(&key, &pt);
        let ct = B64.decode(b64).unwrap();
        let hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8ea2b7ca516745bfeafc49904b496089");
    }

    #[test]
    fn framing_round_trips_with_zero_padding() {
        let keys = TokenKeys::derive("admin", "1080", "BQ5hoXV9", "F3bAakno");
        let msg = br#"{"cmd":"power_off","respbefore":"true","token":"x"}"#;
        let enc = encrypt(&keys.aes_key, msg);
        assert_eq!(B64.decode(&enc).unwrap().len() % 16, 0);
        assert_eq!(decrypt(&keys.aes_key, &enc, 1024).unwrap(), msg);
        // Whole blocks: 16 bytes of plaintext stay 16 bytes.
        let enc = encrypt(&keys.aes_key, &[b'a'; 16]);
        assert_eq!(B64.decode(&enc).unwrap().len(), 16);
        // AES key = SHA-256 of the md5-crypt hash, as its raw 32 bytes.
        let want: [u8; 32] = Sha256::digest(b"RxmaDUO33TS7O26yeMHZ81").into();
        assert_eq!(keys.aes_key, want);
        assert_eq!(
            keys.sign,
            md5_crypt_hash(b"RxmaDUO33TS7O26yeMHZ811080", b"F3bAakno")
        );
        assert!(!format!("{keys:?}").contains(&keys.sign));
    }

    #[test]
    fn bad_ciphertext_is_an_error() {
        let key = [7u8; 32];
        assert!(decrypt(&key, "not base64!", 1024).is_err());
        assert!(decrypt(&key, "", 1024).is_err());
        assert!(decrypt(&key, &B64.encode([1u8; 15]), 1024).is_err());
        assert!(decrypt(&key, &B64.encode([1u8; 4096]), 1024).is_err());
    }
}
