//! Where a site's cluster keeps its state in etcd: everything under `/hashshift/<site>/`.
//!
//! | key | written by | bound to |
//! |---|---|---|
//! | `leader` | the leader (campaign) | the leader's lease |
//! | `plan` | the leader only, in a txn that checks `leader` is under its lease | nothing (survives) |
//! | `instances/<instance>` | each instance | its own lease |
//! | `miners/<instance>` | each instance (its connected miners) | its own lease |
//! | `requests/<id>` | the instance an operator asked | its own lease |
//! | `replies/<id>` | the leader (fenced) | the leader's lease |
//! | `orders/<instance>/<id>` | the leader (fenced): kicks for that instance's miners | the leader's lease |
//!
//! Site and instance names are checked (`config::cluster::valid_name`): no `/` can reach a key.

/// The keys of one site, as seen by one instance.
#[derive(Clone, Debug)]
pub struct Keys {
    root: String,
    instance: String,
}

impl Keys {
    /// The keys of `site` for `instance` (both already validated names).
    pub fn new(site: &str, instance: &str) -> Self {
        Keys {
            root: format!("/hashshift/{site}/"),
            instance: instance.to_owned(),
        }
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The site's prefix (`/hashshift/<site>/`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Who leads: `{instance, lease, since_unix_ms}`, under the leader's lease.
    pub fn leader(&self) -> String {
        format!("{}leader", self.root)
    }

    /// The power plan (what `power.json` holds for a single instance).
    pub fn plan(&self) -> String {
        format!("{}plan", self.root)
    }

    /// Prefix of every instance's presence record.
    pub fn instances(&self) -> String {
        format!("{}instances/", self.root)
    }

    /// This instance's presence record.
    pub fn my_instance(&self) -> String {
        format!("{}{}", self.instances(), self.instance)
    }

    /// Prefix of every instance's miner inventory.
    pub fn miners(&self) -> String {
        format!("{}miners/", self.root)
    }

    /// This instance's miner inventory.
    pub fn my_miners(&self) -> String {
        format!("{}{}", self.miners(), self.instance)
    }

    /// Prefix of operator requests waiting for the leader.
    pub fn requests(&self) -> String {
        format!("{}requests/", self.root)
    }

    /// Prefix of the leader's replies.
    pub fn replies(&self) -> String {
        format!("{}replies/", self.root)
    }

    /// Prefix of the orders for `instance`.
    pub fn orders(&self, instance: &str) -> String {
        format!("{}orders/{instance}/", self.root)
    }

    /// The last segment of `key` under `prefix`, if it is one.
    pub fn name_under<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(prefix)
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_site() {
        let k = Keys::new("hall-a", "p1");
        assert_eq!(k.leader(), "/hashshift/hall-a/leader");
        assert_eq!(k.plan(), "/hashshift/hall-a/plan");
        assert_eq!(k.my_instance(), "/hashshift/hall-a/instances/p1");
        assert_eq!(k.my_miners(), "/hashshift/hall-a/miners/p1");
        assert_eq!(k.orders("p2"), "/hashshift/hall-a/orders/p2/");
        assert_eq!(
            Keys::name_under(&k.miners(), "/hashshift/hall-a/miners/p2"),
            Some("p2")
        );
        assert_eq!(
            Keys::name_under(&k.miners(), "/hashshift/hall-a/miners/"),
            None
        );
        assert_eq!(
            Keys::name_under(&k.miners(), "/hashshift/hall-a/miners/a/b"),
            None
        );
    }
}
