//! The web app's static files (`--web DIR`): GET and HEAD of any path the API does not own
//! answer with the file under the folder, `index.html` for `/`. Only plain names are
//! followed: a path with `..`, `.`, an empty segment, a backslash or a percent escape is
//! refused before the file system is asked, and the resolved file must still lie inside the
//! folder (a symlink pointing out is refused too). `/ripple-web.json` tells the app the anon
//! key to connect with.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};

use super::Body;
use crate::http::App;

/// Where the app learns the anon key it needs for the `apikey` (public by design, as
/// Supabase's anon key is embedded in every frontend).
const CONFIG_PATH: &str = "/ripple-web.json";

/// How long the anon key handed to the app stays valid (a tab open that long reloads).
const ANON_KEY_TTL_SECS: i64 = 365 * 24 * 3600;

/// The response for `path`, or `None` when the request is not a static-file request (the
/// caller answers it as an unknown API path).
pub async fn serve(app: &App, root: &Path, method: &Method, path: &str) -> Option<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    if path == CONFIG_PATH {
        // Null when Ripple only verifies others' keys and cannot sign one: the app asks.
        let anon_key = app.jwt.mint_for("anon", None, ANON_KEY_TTL_SECS);
        let body = serde_json::json!({ "anon_key": anon_key }).to_string();
        let mut resp = super::json(StatusCode::OK, body);
        resp.headers_mut()
            .insert("cache-control", "no-store".parse().expect("static"));
        return Some(resp);
    }
    let Some(relative) = safe_relative(path) else {
        return Some(plain(StatusCode::NOT_FOUND, "not found"));
    };
    let file = match resolve(root, &relative).await {
        Some(f) => f,
        None => return Some(plain(StatusCode::NOT_FOUND, "not found")),
    };
    let bytes = match tokio::fs::read(&file).await {
        Ok(b) => b,
        Err(error) => {
            tracing::debug!(error = %error, "static file unreadable");
            return Some(plain(StatusCode::NOT_FOUND, "not found"));
        }
    };
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(bytes)
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", content_type(&file))
            .header("content-length", len)
            // The app changes with the checkout; revalidate rather than serve stale code.
            .header("cache-control", "no-cache")
            .header("x-content-type-options", "nosniff")
            .body(Body::new(body))
            .expect("valid response"),
    )
}

/// The request path as a relative file path, `None` when it could step outside the folder
/// or name something hidden.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.strip_prefix('/')?;
    if trimmed.is_empty() {
        return Some(PathBuf::from("index.html"));
    }
    let mut out = PathBuf::new();
    for segment in trimmed.split('/') {
        let plain = !segment.is_empty()
            && !segment.starts_with('.')
            && !segment.contains(['\\', '%', '\0', ':']);
        if !plain {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

/// The file inside `root` (a directory resolves to its `index.html`), checked after
/// resolving symlinks.
async fn resolve(root: &Path, relative: &Path) -> Option<PathBuf> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let mut file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    if tokio::fs::metadata(&file).await.ok()?.is_dir() {
        file = tokio::fs::canonicalize(file.join("index.html"))
            .await
            .ok()?;
    }
    (file.starts_with(&root) && tokio::fs::metadata(&file).await.ok()?.is_file()).then_some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::new(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_file_paths() {
        assert_eq!(safe_relative("/"), Some(PathBuf::from("index.html")));
        assert_eq!(
            safe_relative("/vendor/supabase.js"),
            Some(PathBuf::from("vendor/supabase.js"))
        );
        for bad in [
            "/../Cargo.toml",
            "/vendor/../../x",
            "/./index.html",
            "//etc/passwd",
            "/%2e%2e/x",
            "/.git/config",
            "/a\\..\\b",
            "/c:/x",
            "relative",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
