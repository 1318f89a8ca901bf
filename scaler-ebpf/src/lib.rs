//! Empty library target: lets `scaler-user` name this crate as a
//! build-dependency, so cargo rebuilds the embedded object when it changes.
//! The programs are the `scaler` binary target, built for `bpfel-unknown-none`.
#![no_std]
