//! One module per aggregate: its rows, inputs, statuses, repository trait and
//! the implementation of that trait.

pub mod tenants;
