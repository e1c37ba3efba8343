//! A fake of the Whatsminer API v2 management API (being written).
