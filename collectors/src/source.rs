//! Where a worker gets its token: a file (re-read before every attempt and whenever the
//! watcher sees it change) or a value read once at start-up from the environment.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::secret::Token;

/// Largest token file read; Vault tokens are around 100 bytes.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A token's origin.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenSource {
    /// A file holding the token, trimmed of whitespace (Vault Agent sink, `~/.vault-token`).
    File(PathBuf),
    /// A token read at start-up (`token_env`, `VAULT_TOKEN`).
    Value(Token),
}

/// Why the token source gave no token: counted as reason `token_source`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The token file does not exist (yet).
    #[error("token file {0} is missing")]
    Missing(PathBuf),
    /// The token file holds nothing but whitespace.
    #[error("token file {0} is empty")]
    Empty(PathBuf),
    /// The token file exists but cannot be read (permissions, a directory, not UTF-8, too big).
    #[error("cannot read token file {path}: {why}")]
    Unreadable { path: PathBuf, why: String },
}

impl TokenSource {
    /// The current token.
    pub fn read(&self) -> Result<Token, SourceError> {
        match self {
            TokenSource::Value(token) => Ok(token.clone()),
            TokenSource::File(path) => read_token_file(path),
        }
    }

    /// The file to watch, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TokenSource::File(path) => Some(path),
            TokenSource::Value(_) => None,
        }
    }
}

fn read_token_file(path: &Path) -> Result<Token, SourceError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |why: String| SourceError::Unreadable {
        path: path.to_owned(),
        why,
    };
    // Non-blocking, so that a FIFO nobody writes to cannot hang the worker in open(2);
    // the file type is then checked on the opened file, before any read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => SourceError::Missing(path.to_owned()),
            kind => unreadable(kind.to_string()),
        })?;
    let file_type = file
        .metadata()
        .map_err(|e| unreadable(e.kind().to_string()))?
        .file_type();
    if !file_type.is_file() {
        return Err(unreadable(format!(
            "not a regular file (a {})",
            describe(file_type)
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.kind().to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(unreadable("larger than 64 KiB".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?;
    let token = Token::new(&text).ok_or_else(|| SourceError::Empty(path.to_owned()))?;
    // Whitespace or control characters inside (two lines, say) make no token and no valid
    // header: a token-source problem, not a network one. Never say what the file holds.
    if token
        .expose()
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(unreadable(
            "it holds more than one token (whitespace or control characters inside)".into(),
        ));
    }
    Ok(token)
}

/// What a non-regular file is, for the error message.
fn describe(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "named pipe"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// A warning when a token file can be read by group or others, as ssh does for keys.
pub fn loose_permissions_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "token file {} is accessible by group or others (mode {:o}); restrict it with chmod 600",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vte-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_tokens_are_trimmed_with_or_without_newline() {
        let dir = temp_dir("trim");
        let path = dir.join("token");
        for content in ["hvs.ABC", "hvs.ABC\n", "  hvs.ABC \r\n"] {
            std::fs::write(&path, content).unwrap();
            let token = TokenSource::File(path.clone()).read().unwrap();
            assert_eq!(token.expose(), "hvs.ABC");
        }
    }

    #[test]
    fn missing_empty_and_unreadable_files_are_distinct_errors_without_content() {
        let dir = temp_dir("errors");
        let path = dir.join("token");
        let source = TokenSource::File(path.clone());
        assert!(matches!(source.read(), Err(SourceError::Missing(_))));
        std::fs::write(&path, " \n\t").unwrap();
        assert!(matches!(source.read(), Err(SourceError::Empty(_))));
        let dir_source = TokenSource::File(dir.clone());
        assert!(matches!(
            dir_source.read(),
            Err(SourceError::Unreadable { .. })
        ));
        std::fs::write(&path, [0xff, 0xfe, b'h']).unwrap();
        let err = source.read().unwrap_err().to_string();
        assert!(err.contains("not UTF-8") && err.contains("token"), "{err}");
        std::fs::write(&path, "hvs.FIRSTsecret\nhvs.SECONDsecret\n").unwrap();
        let err = source.read().unwrap_err();
        assert!(matches!(err, SourceError::Unreadable { .. }));
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once_without_blocking() {
        let dir = temp_dir("fifo");
        let fifo = dir.join("token");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        // Nobody writes to it: a blocking open would hang this test forever.
        let err = TokenSource::File(fifo).read().unwrap_err().to_string();
        assert!(err.contains("not a regular file (a named pipe)"), "{err}");
        let err = TokenSource::File("/dev/null".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file (a device)"), "{err}");
        let err = TokenSource::File(dir).read().unwrap_err().to_string();
        assert!(err.contains("not a regular file (a directory)"), "{err}");
    }

    #[test]
    fn group_readable_files_are_flagged() {
        let dir = temp_dir("perm");
        let path = dir.join("token");
        std::fs::write(&path, "hvs.X").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_permissions_warning(&path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = loose_permissions_warning(&path).unwrap();
        assert!(
            warning.contains("644") && warning.contains("chmod 600"),
            "{warning}"
        );
    }
}
