//! The scalars of a configuration as LiteLLM reads them: a string, secret or number may be
//! written in place or read from the environment (`os.environ/NAME`), and is checked as it is
//! read (seconds are non-negative, shares from 0 to 1). A value from the environment is never
//! shown in an error.

use std::fmt;
use std::time::Duration;

use ferrolite_types::Secret;
use serde::{Deserialize, Deserializer};

/// A string that may be read from the environment (`os.environ/NAME`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EnvString(pub(super) String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        resolve_env(&value).map(EnvString)
    }
}

/// `#[serde(deserialize_with)]` for an optional string that may be `os.environ/NAME`.
pub(super) fn env_string_opt<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<EnvString>::deserialize(deserializer)?.map(|s| s.0))
}

/// `#[serde(deserialize_with)]` for a string that may be `os.environ/NAME`.
pub(super) fn env_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(EnvString::deserialize(deserializer)?.0)
}

/// A secret, literal or from the environment (`os.environ/NAME`); never printed.
#[derive(Clone, PartialEq)]
pub(super) struct SecretValue(pub(super) Secret);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        resolve_env(&value).map(|v| SecretValue(Secret::new(v)))
    }
}

/// A credential written as a string (literal, a file's path, or `os.environ/NAME`) or as a
/// mapping (a service account's JSON inline, as LiteLLM accepts `vertex_credentials`): a
/// mapping is kept as its JSON text. Never printed.
#[derive(Clone, PartialEq)]
pub(super) struct CredentialValue(pub(super) Secret);

impl fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for CredentialValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(value) => {
                resolve_env(&value).map(|v| CredentialValue(Secret::new(v)))
            }
            value @ serde_json::Value::Object(_) => {
                Ok(CredentialValue(Secret::new(value.to_string())))
            }
            _ => Err(serde::de::Error::custom(
                "expected a string (a value, a file's path or os.environ/NAME) or a mapping",
            )),
        }
    }
}

/// `value`, or the environment variable it names (`os.environ/NAME`).
fn resolve_env<E: serde::de::Error>(value: &str) -> Result<String, E> {
    match value.strip_prefix("os.environ/") {
        Some(name) => std::env::var(name).map_err(|_| {
            E::custom(format!(
                "the environment variable `{name}` (named by `os.environ/{name}`) is not set"
            ))
        }),
        None => Ok(value.to_string()),
    }
}

/// A scalar that may be written as itself or read from the environment (`os.environ/NAME`),
/// as LiteLLM reads `redis_port: os.environ/REDIS_PORT`: the variable's text is converted and
/// checked as the scalar written in place would be. A value from the environment is never
/// shown in an error (it may be a secret read through the wrong variable).
pub(super) trait EnvScalar: Sized {
    /// What is expected, in words (`a non-negative integer`).
    const EXPECTED: &'static str;
    /// From an unsigned integer the YAML holds.
    fn from_u64(value: u64) -> Option<Self>;
    /// From a negative integer the YAML holds.
    fn from_i64(value: i64) -> Option<Self>;
    /// From a fractional number the YAML holds.
    fn from_f64(value: f64) -> Option<Self>;
    /// From a boolean the YAML holds.
    fn from_bool(_value: bool) -> Option<Self> {
        None
    }
    /// From text (an environment variable's, or a quoted scalar).
    fn parse(text: &str) -> Option<Self>;
}

macro_rules! env_integer {
    ($($t:ty => $expected:literal),* $(,)?) => {$(
        impl EnvScalar for $t {
            const EXPECTED: &'static str = $expected;
            fn from_u64(value: u64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
            fn from_i64(value: i64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
            fn from_f64(_value: f64) -> Option<Self> {
                None
            }
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        }
    )*};
}

env_integer!(
    u8 => "an integer from 0 to 255",
    u16 => "an integer from 0 to 65535",
    u32 => "a non-negative integer",
    u64 => "a non-negative integer",
    usize => "a non-negative integer",
);

impl EnvScalar for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_u64(value: u64) -> Option<Self> {
        Some(value as f64)
    }
    fn from_i64(value: i64) -> Option<Self> {
        Some(value as f64)
    }
    fn from_f64(value: f64) -> Option<Self> {
        Some(value)
    }
    fn parse(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

impl EnvScalar for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_u64(_value: u64) -> Option<Self> {
        None
    }
    fn from_i64(_value: i64) -> Option<Self> {
        None
    }
    fn from_f64(_value: f64) -> Option<Self> {
        None
    }
    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
    fn parse(text: &str) -> Option<Self> {
        // As LiteLLM's `str_to_bool` reads an environment variable.
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

/// Reads an [`EnvScalar`] (or nothing, for a YAML null) from any scalar.
struct EnvVisitor<T>(std::marker::PhantomData<T>);

impl<T: EnvScalar> EnvVisitor<T> {
    fn wrong<E: serde::de::Error>(shown: impl fmt::Display) -> E {
        E::custom(format!("expected {}, got {shown}", T::EXPECTED))
    }
}

impl<'de, T: EnvScalar> serde::de::Visitor<'de> for EnvVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or os.environ/NAME", T::EXPECTED)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        T::from_bool(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        T::from_u64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        T::from_i64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // `{:?}` keeps the fraction of `100.0`, so "expected an integer" reads right.
        T::from_f64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(format!("{value:?}")))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        match value.strip_prefix("os.environ/") {
            Some(name) => {
                let text = resolve_env::<E>(value)?;
                T::parse(&text).map(Some).ok_or_else(|| {
                    E::custom(format!(
                        "expected {}, got the environment variable `{name}` (named by \
                         `os.environ/{name}`), whose value is not one (the value is not shown)",
                        T::EXPECTED
                    ))
                })
            }
            None => T::parse(value)
                .map(Some)
                .ok_or_else(|| Self::wrong(format!("{value:?}"))),
        }
    }
}

/// `#[serde(deserialize_with)]` for an optional scalar that may be `os.environ/NAME`.
pub(super) fn env_opt<'de, D: Deserializer<'de>, T: EnvScalar>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    deserializer.deserialize_any(EnvVisitor::<T>(std::marker::PhantomData))
}

/// A scalar that may be `os.environ/NAME` where a value is required (not a null).
fn env_required<'de, D: Deserializer<'de>, T: EnvScalar>(deserializer: D) -> Result<T, D::Error> {
    env_opt(deserializer)?
        .ok_or_else(|| serde::de::Error::custom(format!("expected {}, got nothing", T::EXPECTED)))
}

/// A non-negative, finite number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Seconds(pub(super) f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value: f64 = env_required(deserializer)?;
        if Duration::try_from_secs_f64(value).is_err() {
            return Err(serde::de::Error::custom(format!(
                "expected a non-negative number of seconds that fits a duration, got {value:?}"
            )));
        }
        Ok(Seconds(value))
    }
}

impl Seconds {
    /// The number of seconds as a duration.
    pub(super) fn duration(self) -> Duration {
        // Checked when it was read.
        Duration::try_from_secs_f64(self.0).unwrap_or(Duration::MAX)
    }
}

/// A share from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Share(pub(super) f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value: f64 = env_required(deserializer)?;
        if !(0.0..=1.0).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "expected a share from 0 to 1, got {value}"
            )));
        }
        Ok(Share(value))
    }
}
