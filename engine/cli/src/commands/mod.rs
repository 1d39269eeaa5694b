//! One module per command (or family of commands): each turns parsed arguments into engine
//! calls and renders what they return.

pub mod cluster;
pub mod example;
pub mod lineage;
pub mod model;
pub mod run;
pub mod schedule;
pub mod tables;
pub mod validate;
pub mod warehouse;
