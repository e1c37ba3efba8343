//! d. SV1 and SV2 miners → hashshift's SV1 upstream → SRI translator_sv2 → SRI pool_sv2 ←
//! our template provider, with failover to and from our test pool. (Being written.)
