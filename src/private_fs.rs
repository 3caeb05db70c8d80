//! Files and directories only the gateway's own user may read: call recordings and
//! their notes (0600), the recording and data directories (0700), the SQLite
//! database (0600). The mode is set explicitly after creation, so it holds whatever
//! the process umask is; what already exists is left alone (an operator may have
//! chosen its mode) but a group- or world-accessible one is reported once.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the files we create.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directories we create.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` and every missing parent as 0700 directories.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    let missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .map(Path::to_path_buf)
        .collect();
    for dir in missing.iter().rev() {
        match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates (or truncates) the file `path` as 0600 for writing and reading.
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates `path` as an empty 0600 file unless it exists; true when created.
pub fn create_if_missing(path: &Path) -> io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Logs a warning when `path` exists and its group or others have any access.
pub fn warn_if_shared(path: &Path, what: &str) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "{what} is readable by other users; chmod it to {:o}",
                if meta.is_dir() { DIR_MODE } else { FILE_MODE }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_hold_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(d)), DIR_MODE, "{d}");
        }
        // Existing directories are left as they are.
        fs::set_permissions(root.path().join("a"), Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&deep).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o755);

        let file = deep.join("f.wav");
        drop(create_file(&file).unwrap());
        assert_eq!(mode(&file), FILE_MODE);
        let db = deep.join("x.db");
        assert!(create_if_missing(&db).unwrap());
        assert!(!create_if_missing(&db).unwrap());
        assert_eq!(mode(&db), FILE_MODE);
    }
}
