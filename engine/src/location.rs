//! Locations: the paths and URLs a job or a command names, made into URLs.
//!
//! Everything downstream works with [`Url`]s through `object_store`, so a local path and an
//! `s3://` URL take the same code path; only this module knows what a local path is.

use std::path::Path;

use url::Url;

use crate::error::{EngineError, Result};

/// Resolves `text` (a URL, an absolute path, or a path relative to `base_dir`) to a URL.
///
/// Local folders get a trailing slash, the convention `object_store` listing and delta-rs use
/// for "this is a prefix, not an object".
pub fn resolve_location(base_dir: &Path, text: &str) -> Result<Url> {
    if looks_like_url(text) {
        return Url::parse(text).map_err(|e| EngineError::Location {
            location: text.to_string(),
            message: e.to_string(),
        });
    }
    let joined = base_dir.join(text);
    let absolute = std::path::absolute(&joined).map_err(|e| EngineError::Location {
        location: text.to_string(),
        message: e.to_string(),
    })?;
    let normalized = normalize_path(&absolute);
    let url = if normalized.is_dir() {
        Url::from_directory_path(&normalized)
    } else {
        Url::from_file_path(&normalized)
    };
    url.map_err(|()| EngineError::Location {
        location: text.to_string(),
        message: "not an absolute path".to_string(),
    })
}

/// Resolves a location that names a table (a folder): always with a trailing slash.
pub fn resolve_table_location(base_dir: &Path, text: &str) -> Result<Url> {
    let mut url = resolve_location(base_dir, text)?;
    ensure_trailing_slash(&mut url);
    Ok(url)
}

/// Joins a child folder onto a folder URL.
pub fn join_folder(parent: &Url, child: &str) -> Result<Url> {
    let mut base = parent.clone();
    ensure_trailing_slash(&mut base);
    let mut url = base.join(child).map_err(|e| EngineError::Location {
        location: format!("{parent}{child}"),
        message: e.to_string(),
    })?;
    ensure_trailing_slash(&mut url);
    Ok(url)
}

/// Joins a relative file path (`a/b/file.json`) onto a folder URL.
pub fn join_file(parent: &Url, child: &str) -> Result<Url> {
    let mut base = parent.clone();
    ensure_trailing_slash(&mut base);
    base.join(child).map_err(|e| EngineError::Location {
        location: format!("{base}{child}"),
        message: e.to_string(),
    })
}

/// Adds a trailing `/` to the URL's path when it has none.
pub fn ensure_trailing_slash(url: &mut Url) {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
}

/// A location for display: local file URLs as paths, everything else as the URL.
pub fn display_location(url: &Url) -> String {
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        return path.display().to_string();
    }
    url.to_string()
}

fn looks_like_url(text: &str) -> bool {
    match text.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// Removes `.` and `..` components without touching the file system (the path may not exist).
fn normalize_path(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pass_through() {
        let url = resolve_location(Path::new("/base"), "s3://bucket/a/b").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/a/b");
    }

    #[test]
    fn relative_paths_resolve_against_base() {
        let url = resolve_table_location(Path::new("/base/jobs"), "../wh/t").unwrap();
        assert_eq!(url.as_str(), "file:///base/wh/t/");
    }

    #[test]
    fn join_adds_slashes() {
        let wh = Url::parse("file:///wh").unwrap();
        assert_eq!(
            join_folder(&wh, "_lakeforge/runs").unwrap().as_str(),
            "file:///wh/_lakeforge/runs/"
        );
    }

    #[test]
    fn display_strips_file_scheme() {
        let url = Url::parse("file:///a/b/").unwrap();
        assert_eq!(display_location(&url), "/a/b/");
    }
}
