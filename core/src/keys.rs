//! Keys: the age recipients and identities a snapshot is encrypted to and
//! read with, passphrases, and the signing keys and trusted signers that
//! decide which snapshots a restore admits.

pub use crate::crypto::{
    DEFAULT_SCRYPT_LOG_N, Encryption, GeneratedKey, Identities, Passphrase, RecipientKey, looks_like_key,
    public_half_hint, secret_key_kind, shown,
};
pub use crate::signing::{AdmittedIndex, SignatureState, SignerKey, SigningKey, TrustState, TrustedSigners};
