//! Why emitting failed, typed: the message, a hint, and what is at fault (a field of an input
//! resource, a command-line option, a file sluice reads, or sluice itself), so the diagnostic
//! made of it ([`EmitError::into_diagnostic`]) names `file:line:col`, resource and field path
//! where an input is to blame, and otherwise the flag, variable or file to fix.

use std::path::{Path, PathBuf};

use crate::diag::{Code, Diagnostic, Origin, Severity};
use crate::position::{FieldPath, Pos};

/// What an [`EmitError`] blames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blame {
    /// A field of an input resource (boxed: errors travel in `Result`s, kept small).
    Input(Box<Origin>),
    /// A command-line option or environment variable, as the user writes it (`--module-cluster`).
    Option(String),
    /// A file sluice reads besides the input (a wasm module).
    File(PathBuf),
    /// sluice itself: a config it wrote that its filter would read differently (a bug).
    Internal,
}

/// An error raised while building the Envoy resources or packaging them for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmitError {
    /// What is at fault.
    pub blame: Blame,
    /// What went wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl EmitError {
    /// An error at a field of an input resource (`None`: no input is known to be at fault, so
    /// sluice itself is).
    pub fn at_input(origin: Option<Origin>, message: impl Into<String>) -> Self {
        Self {
            blame: origin.map_or(Blame::Internal, |o| Blame::Input(Box::new(o))),
            message: message.into(),
            hint: None,
        }
    }

    /// An error of a command-line option (`flag` as written: `--module-cluster`).
    pub fn option(flag: &str, message: impl Into<String>) -> Self {
        Self {
            blame: Blame::Option(flag.to_owned()),
            message: message.into(),
            hint: None,
        }
    }

    /// A wasm module that cannot be read: names the module, the path tried, and the flag and
    /// variable that choose the folder.
    pub fn module_unreadable(module: &str, path: &Path, error: &std::io::Error) -> Self {
        Self {
            blame: Blame::File(path.to_path_buf()),
            message: format!("cannot read the {module} filter module: {error}"),
            hint: Some(format!(
                "pass --wasm-dir DIR or set SLUICE_WASM_DIR to the folder holding {}; build the \
                 modules with `sluice build` or `cargo build --release --target wasm32-wasip1 -p \
                 sluice-{module}`",
                path.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            )),
        }
    }

    /// A bug of sluice's (a config the filter would read with other values).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            blame: Blame::Internal,
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with a hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The diagnostic (`SL401`): at the input's field, else named by the option, the file or
    /// `<internal>` (without a position, which none of those has).
    pub fn into_diagnostic(self) -> Diagnostic {
        let (file, pos, resource, path) = match self.blame {
            Blame::Input(o) => {
                let o = *o;
                (o.file, o.pos, o.resource, o.path)
            }
            Blame::Option(flag) => (flag, Pos::default(), String::new(), FieldPath::root()),
            Blame::File(p) => (
                p.display().to_string(),
                Pos::default(),
                String::new(),
                FieldPath::root(),
            ),
            Blame::Internal => (
                "<internal>".to_owned(),
                Pos::default(),
                String::new(),
                FieldPath::root(),
            ),
        };
        Diagnostic {
            file,
            pos,
            severity: Severity::Error,
            resource,
            path,
            message: self.message,
            hint: self.hint,
            code: Code::EmitFailed,
        }
    }
}

impl std::fmt::Display for EmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}
