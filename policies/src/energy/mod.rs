//! Energy (in progress).
