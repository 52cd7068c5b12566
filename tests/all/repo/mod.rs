//! The repositories outside the money path.

mod activity;
mod campaigns;
mod people;
