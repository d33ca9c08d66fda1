//! The sluice builder: parse -> validate -> model -> emit.
