//! Architecture layer.
