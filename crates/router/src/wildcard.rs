//! Wildcard model groups (`openai/*`, the catch-all `*`): which one serves a model and what its
//! `*` stands for. Read by resolution and by the snapshot's check of what the settings name.

/// What `*` stands for when `pattern` (a group name like `openai/*` or `*`) matches `model`.
pub(crate) fn wildcard_capture<'m>(pattern: &str, model: &'m str) -> Option<&'m str> {
    let (prefix, suffix) = pattern.split_once('*')?;
    if suffix.contains('*') || model.len() < prefix.len() + suffix.len() {
        return None;
    }
    let middle = model.strip_prefix(prefix)?.strip_suffix(suffix)?;
    Some(middle)
}

/// The wildcard group serving `model` (most specific first) and what its `*` stands for: the
/// model matched as given, else as LiteLLM's pattern router also tries it, prefixed with the
/// provider LiteLLM infers for a bare name (`gpt-3.5-turbo` is served by `openai/*`).
pub(crate) fn wildcard_group<'p>(patterns: &'p [String], model: &str) -> Option<(&'p str, String)> {
    let prefixed = (!model.contains('/'))
        .then(|| ferrolite_types::Provider::from_model(model).ok())
        .flatten()
        .map(|provider| format!("{provider}/{model}"));
    for name in std::iter::once(model).chain(prefixed.as_deref()) {
        if let Some((pattern, capture)) = patterns
            .iter()
            .find_map(|p| wildcard_capture(p, name).map(|c| (p.as_str(), c.to_string())))
        {
            return Some((pattern, capture));
        }
    }
    None
}
