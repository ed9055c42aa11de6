//! The files of a `build:` context, as `docker build` would send them: every file under the
//! context directory except those `.dockerignore` excludes. Three views of the same list: a
//! content digest (the image tag, see [`crate::compose::build_tag`]), a cheap stamp of sizes
//! and modification times (what `stackwarden local` polls to notice an edit), and the tar the
//! build API takes.
//!
//! `.dockerignore` follows Docker's rules for the common cases: one pattern a line, `#`
//! comments, `*` and `?` within a path segment, `**` across segments, a leading `!` to
//! re-include, the last matching pattern deciding; a pattern that matches a directory excludes
//! what is under it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// One file of a context: its path inside the context (with `/`) and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextFile {
    pub rel: String,
    pub path: PathBuf,
}

/// The files of the context at `dir`, sorted, `.dockerignore` applied.
pub fn files(dir: &Path) -> io::Result<Vec<ContextFile>> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    let ignore = std::fs::read_to_string(dir.join(".dockerignore"))
        .map(|t| Ignore::parse(&t))
        .unwrap_or_default();
    let mut out = Vec::new();
    walk(dir, "", &ignore, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, ignore: &Ignore, out: &mut Vec<ContextFile>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // A directory is walked even when ignored: a later `!pattern` may take a file back.
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, ignore, out)?;
        } else if !ignore.excludes(&rel) {
            out.push(ContextFile {
                rel,
                path: entry.path(),
            });
        }
    }
    Ok(())
}

/// The digest of the context's content: paths, contents, and whether each file is executable
/// (a `chmod +x` changes the image). Symlinks count by their target.
pub fn digest(dir: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    for f in files(dir)? {
        h.update(f.rel.as_bytes());
        h.update([0]);
        let meta = std::fs::symlink_metadata(&f.path)?;
        if meta.file_type().is_symlink() {
            h.update(b"link:");
            h.update(std::fs::read_link(&f.path)?.to_string_lossy().as_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.update([u8::from(meta.permissions().mode() & 0o111 != 0)]);
            h.update(std::fs::read(&f.path)?);
        }
        h.update([0]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Sizes and modification times of the context's files: changes whenever an edit could have
/// changed the digest, without reading a byte of content.
pub type Stamp = Vec<(String, u64, Option<SystemTime>)>;

pub fn stamp(dir: &Path) -> Stamp {
    files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let meta = std::fs::symlink_metadata(&f.path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            (f.rel, len, meta.and_then(|m| m.modified().ok()))
        })
        .collect()
}

/// The context as the tar the build API takes, in memory: build contexts are source trees,
/// and `.dockerignore` keeps the big directories out.
pub async fn tar(dir: &Path) -> io::Result<Vec<u8>> {
    let list = files(dir)?;
    let mut builder = tokio_tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for f in list {
        builder.append_path_with_name(&f.path, &f.rel).await?;
    }
    builder.into_inner().await
}

/// The patterns of a `.dockerignore`, in order.
#[derive(Clone, Debug, Default)]
struct Ignore(Vec<(bool, Vec<String>)>);

impl Ignore {
    fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let p = p.trim_start_matches("./").trim_matches('/');
                let segments = p
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (keep, segments)
            })
            .collect();
        Self(patterns)
    }

    /// Whether the file at `rel` is left out: the last pattern matching it, or one of its
    /// parent directories, decides.
    fn excludes(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for (keep, pattern) in &self.0 {
            let hit = (1..=parts.len()).any(|n| matches(pattern, &parts[..n]));
            if hit {
                excluded = !keep;
            }
        }
        excluded
    }
}

/// Whether path segments `path` match pattern segments `pattern` (`**` spans any number).
fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, tail)) => glob(first.as_bytes(), seg.as_bytes()) && matches(rest, tail),
            None => false,
        },
    }
}

/// `*` and `?` within one segment.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_excludes_directories_globs_and_takes_files_back_with_bang() {
        let ig = Ignore::parse(
            "# deps\nnode_modules\n*.log\n**/cache\n!keep.log\n./build/\ndocs/*.md\n",
        );
        for excluded in [
            "node_modules/a/b.js",
            "x.log",
            "src/cache/z",
            "build/out.bin",
            "docs/a.md",
        ] {
            assert!(ig.excludes(excluded), "{excluded}");
        }
        for kept in [
            "keep.log",
            "src/main.rs",
            "docs/sub/a.md",
            "src/x.log",
            "Dockerfile",
        ] {
            assert!(!ig.excludes(kept), "{kept}");
        }
    }

    #[test]
    fn the_digest_follows_content_and_ignores_what_dockerignore_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "*.tmp\n").unwrap();
        let first = digest(d).unwrap();
        std::fs::write(d.join("junk.tmp"), "ignored").unwrap();
        assert_eq!(digest(d).unwrap(), first);
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::write(d.join("src/app.sh"), "echo 1").unwrap();
        let second = digest(d).unwrap();
        assert_ne!(second, first);
        std::fs::write(d.join("src/app.sh"), "echo 2").unwrap();
        assert_ne!(digest(d).unwrap(), second);
        assert!(digest(&d.join("missing")).is_err());
        let names: Vec<_> = files(d).unwrap().into_iter().map(|f| f.rel).collect();
        assert_eq!(names, [".dockerignore", "Dockerfile", "src/app.sh"]);
    }
}
