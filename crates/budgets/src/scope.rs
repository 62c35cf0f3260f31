//! What a budget applies to.

use std::fmt;

/// A budget's scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every deployment of a provider (`openai`, `azure`...).
    Provider(String),
    /// One deployment, by id.
    Deployment(String),
    /// Requests carrying a tag.
    Tag(String),
}

impl Scope {
    /// LiteLLM's key kind: `provider`, `deployment` or `tag`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Provider(_) => "provider",
            Scope::Deployment(_) => "deployment",
            Scope::Tag(_) => "tag",
        }
    }

    /// The provider name, deployment id or tag.
    pub fn name(&self) -> &str {
        match self {
            Scope::Provider(n) | Scope::Deployment(n) | Scope::Tag(n) => n,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}
