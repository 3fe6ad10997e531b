//! Secrets named by the config (environment variables and files, never the TOML
//! itself) and the rule for what makes a key that signs links strong enough: the
//! config checks it (`vigia check`), the link signer applies it.

use std::path::PathBuf;

/// Where a secret comes from; its value is read when needed and never logged.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "Secret::Env({name})"),
            Secret::File(path) => write!(f, "Secret::File({})", path.display()),
        }
    }
}

impl Secret {
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("environment variable {name} is not set"),
                )
            }),
            Secret::File(path) => {
                std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

/// Shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;
/// Least estimated entropy (bits) of a key: refuses keys such as a repeated letter
/// or a short word pattern, which pass the length rule but are guessable. A random
/// hex key of 16 characters or more passes comfortably.
pub const MIN_KEY_BITS: f64 = 48.0;
/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeakKey {
    #[error("the key is {0} bytes long; it must be at least {MIN_KEY_LEN}")]
    TooShort(usize),
    #[error("the key is too predictable (about {0:.0} bits; at least {MIN_KEY_BITS:.0} needed): use random bytes, such as the output of `openssl rand -hex 32`")]
    TooPredictable(f64),
}

/// Refuses keys that are short or predictable.
pub fn check_key_strength(key: &[u8]) -> Result<(), WeakKey> {
    if key.len() < MIN_KEY_LEN {
        return Err(WeakKey::TooShort(key.len()));
    }
    let bits = estimated_bits(key);
    if bits < MIN_KEY_BITS {
        return Err(WeakKey::TooPredictable(bits));
    }
    Ok(())
}

/// An estimate of a key's entropy in bits: its length times the Shannon entropy of
/// its own byte frequencies. It cannot see patterns ("abcabc…" scores well), but it
/// refuses repeated letters and tiny alphabets, the weak keys people actually type.
pub fn estimated_bits(key: &[u8]) -> f64 {
    if key.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for b in key {
        counts[usize::from(*b)] += 1;
    }
    let n = key.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}
