//! A fake of the VNish management API (being written).
