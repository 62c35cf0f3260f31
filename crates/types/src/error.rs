//! The one error type of this crate.

/// What was wrong with a value handed to ferrolite-types, naming the field and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TypesError {
    /// A field that must not be empty was empty.
    #[error("deployment field `{field}` must not be empty")]
    Empty {
        /// The field, e.g. `model`.
        field: &'static str,
    },
    /// A number that must be finite and non-negative was not.
    #[error("deployment field `{field}` must be a finite number >= 0, got {value}")]
    InvalidNumber {
        /// The field, e.g. `weight`.
        field: &'static str,
        /// The value as given.
        value: f64,
    },
    /// A value outside the range the field accepts.
    #[error("deployment field `{field}` is out of range: {value} ({reason})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What the field accepts.
        reason: &'static str,
    },
    /// Two deployments of one list share an id (explicit, or derived from the same endpoint).
    #[error("two deployments share the id `{id}`; give them distinct explicit ids")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// The provider could not be derived from the model string.
    #[error(
        "cannot tell the provider of model `{model}`: prefix it with a provider \
         (e.g. `openai/{model}`) or set `custom_llm_provider`"
    )]
    UnknownProvider {
        /// The model string as given.
        model: String,
    },
}
