//! The `sv2_struct!` macro: an SV2 message is a struct whose wire form is its fields encoded
//! in declaration order, so the struct definition alone fixes the encoding. Writing it once
//! keeps the field order of the struct and the codec from drifting apart.

/// Defines a struct with public fields plus its [`Sv2Encode`](super::types::Sv2Encode) and
/// [`Sv2Decode`](super::types::Sv2Decode) impls (fields in declaration order).
macro_rules! sv2_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl $crate::sv2::types::Sv2Encode for $name {
            fn encoded_len(&self) -> usize {
                0 $(+ $crate::sv2::types::Sv2Encode::encoded_len(&self.$field))*
            }
            fn encode<B: bytes::BufMut>(&self, dst: &mut B) {
                $( $crate::sv2::types::Sv2Encode::encode(&self.$field, dst); )*
            }
        }

        impl $crate::sv2::types::Sv2Decode for $name {
            const MIN_ENCODED_LEN: usize =
                0 $(+ <$ty as $crate::sv2::types::Sv2Decode>::MIN_ENCODED_LEN)*;
            fn decode(
                r: &mut $crate::sv2::types::Reader<'_>,
            ) -> Result<Self, $crate::sv2::error::Sv2Error> {
                Ok($name {
                    $( $field: <$ty as $crate::sv2::types::Sv2Decode>::decode(r)?, )*
                })
            }
        }
    };
}
