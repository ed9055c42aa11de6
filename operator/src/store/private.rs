//! Files only their owner may read. The state directory holds `spec.variables` (passwords) in
//! its records, so every directory in it is 0700 and every file 0600, whatever the umask.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of every directory in the state directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the state directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents as 0700. A directory that already exists keeps its
/// mode here; [`tighten`] fixes those of an earlier version once, at start.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Replaces `path` with `bytes` as one step: written to a temporary file that is 0600 from
/// the moment it exists (so no other user can open it in between), flushed to disk, then
/// renamed over `path`. A kill at any point leaves the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // tempfile creates its files 0600 with O_EXCL, and removes them if this fails midway.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// [`write_atomic`], then the directory flushed too, so that the rename itself survives a power
/// loss: for files whose old content must not come back (a rotated password).
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

/// Opens (creating it 0600 if missing) a file to lock or append to.
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Brings a state directory written by an earlier version (0755 directories, 0644 records) to
/// 0700 and 0600. Symlinks are not followed: what they point to is not ours to change.
/// Returns how many entries it changed.
pub fn tighten(root: &Path) -> std::io::Result<usize> {
    let mut changed = 0;
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let want = if meta.is_dir() {
        DIR_MODE
    } else if meta.is_file() {
        FILE_MODE
    } else {
        return Ok(0);
    };
    if meta.permissions().mode() & 0o7777 != want {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(want))?;
        changed += 1;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            changed += tighten(&entry?.path())?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_atomic_write_leaves_a_0600_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("ns/name");
        create_dir(&state).unwrap();
        let file = state.join("record.json");
        // An earlier version's world-readable file is replaced, not rewritten in place.
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&file, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(mode(&state), DIR_MODE);
        assert_eq!(mode(&dir.path().join("ns")), DIR_MODE);
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
    }

    #[test]
    fn tightening_an_old_state_directory_fixes_every_mode_and_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let stack = root.join("default/demo");
        std::fs::create_dir_all(&stack).unwrap();
        std::fs::write(stack.join("record.json"), "{}").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not ours").unwrap();
        std::os::unix::fs::symlink(&outside, stack.join("link")).unwrap();
        for p in [&root, &root.join("default"), &stack] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in [&stack.join("record.json"), &outside] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert_eq!(tighten(&root).unwrap(), 4);
        for d in [&root, &root.join("default"), &stack] {
            assert_eq!(mode(d), DIR_MODE, "{}", d.display());
        }
        assert_eq!(mode(&stack.join("record.json")), FILE_MODE);
        assert_eq!(mode(&outside), 0o644, "a symlink's target was changed");
        assert_eq!(tighten(&root).unwrap(), 0, "a second pass changes nothing");
    }
}
