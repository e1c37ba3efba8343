//! A fake of the Stock Antminer management API (being written).
