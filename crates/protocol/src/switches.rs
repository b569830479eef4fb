//! Feature switches: their definition, the context a check runs in, and the compiled
//! snapshot ([`SwitchSet`]) that agents and the collector evaluate locally.
//!
//! A switch is `off`, `on` for everyone, `selective` (on when any inclusion condition
//! matches and no exclusion does), or `inherit` (whatever its parent `a` says for
//! `a:b`). Percentage rollouts hash the switch key and the user id into 10,000 basis
//! points with a hash written out here (FNV-1a plus a finaliser), so a user lands in the
//! same bucket on every process, platform and Rust release, and stays in as the
//! percentage grows.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Longest switch key, in bytes.
pub const MAX_SWITCH_KEY_LEN: usize = 128;
/// Most `:`-separated segments in a key (`a:b:c:d`).
pub const MAX_SWITCH_DEPTH: usize = 4;
/// Most inclusion (and, separately, exclusion) conditions on one switch.
pub const MAX_CONDITIONS: usize = 32;
/// Most values one condition may list (user ids, CIDRs, hosts, attribute values).
pub const MAX_CONDITION_VALUES: usize = 1_000;
/// Longest value in a condition, and longest label or owner.
pub const MAX_VALUE_LEN: usize = 256;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 4_096;
/// Percentages resolve to this many buckets (basis points).
pub const PERCENT_BUCKETS: u32 = 10_000;

/// What a switch does for everyone before conditions are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchState {
    /// Off for everyone.
    Off,
    /// On for everyone.
    On,
    /// On where an inclusion condition matches and no exclusion does.
    Selective,
    /// Whatever the parent switch (`a` for `a:b`) evaluates to.
    Inherit,
}

impl SwitchState {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchState::Off => "off",
            SwitchState::On => "on",
            SwitchState::Selective => "selective",
            SwitchState::Inherit => "inherit",
        }
    }
}

/// How an attribute condition compares the context's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeOp {
    /// Equal to the one value given.
    Equals,
    /// Equal to one of the values.
    In,
    /// Starts with one of the values.
    Prefix,
}

/// One condition of a selective switch; `kind` names it on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Condition {
    /// A sticky share of users: those whose bucket of `hash(key, user_id)` is below
    /// `percent` (0–100, two decimals count).
    Percentage {
        /// Share of users, 0 to 100.
        percent: f64,
    },
    /// Users by id.
    Users {
        /// User ids.
        ids: Vec<String>,
    },
    /// Client addresses: single IPv4/IPv6 addresses or CIDR blocks.
    Ip {
        /// `10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`, …
        cidrs: Vec<String>,
    },
    /// Hosts the app runs on (the context's `host`).
    Host {
        /// Host names.
        hosts: Vec<String>,
    },
    /// Deployment environments (the context's `environment`).
    Environment {
        /// Environment names.
        environments: Vec<String>,
    },
    /// Any attribute the app puts into the context.
    Attribute {
        /// Attribute name.
        name: String,
        /// How to compare.
        op: AttributeOp,
        /// Values to compare with (exactly one for `equals`).
        values: Vec<String>,
    },
}

/// A switch definition, as stored, edited and shipped to agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// `parent:child` namespaced key: segments of `a-z 0-9 _ - .`.
    pub key: String,
    /// Short human name.
    #[serde(default)]
    pub label: String,
    /// What it guards and when to remove it.
    #[serde(default)]
    pub description: String,
    /// Who to ask about it.
    #[serde(default)]
    pub owner: String,
    /// The value to assume where the switch cannot be evaluated (an `inherit` switch
    /// whose parent does not exist); apps declare their own default for the time
    /// before their agent first synced.
    #[serde(default)]
    pub default: bool,
    /// Off, on, selective or inherit.
    pub state: SwitchState,
    /// Inclusions: in `selective`, any one turns the switch on.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Exclusions: in `selective`, any one turns it off, whatever the inclusions say.
    #[serde(default)]
    pub exclusions: Vec<Condition>,
}

/// A definition that must not be stored, with a message for whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchError(pub String);

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SwitchError {}

fn invalid(message: impl Into<String>) -> SwitchError {
    SwitchError(message.into())
}

/// Checks a key: 1–[`MAX_SWITCH_DEPTH`] segments joined by `:`, each of lowercase
/// ASCII letters, digits, `_`, `-` or `.`, at most [`MAX_SWITCH_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> Result<(), SwitchError> {
    if key.is_empty() || key.len() > MAX_SWITCH_KEY_LEN {
        return Err(invalid(format!(
            "key must be 1 to {MAX_SWITCH_KEY_LEN} bytes"
        )));
    }
    let segments = key.split(':').count();
    if segments > MAX_SWITCH_DEPTH {
        return Err(invalid(format!(
            "key may have at most {MAX_SWITCH_DEPTH} `:`-separated segments"
        )));
    }
    let good = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if key.split(':').any(|s| s.is_empty() || !s.chars().all(good)) {
        return Err(invalid(
            "key segments must be non-empty and use only a-z, 0-9, `_`, `-` and `.`, joined by `:`",
        ));
    }
    Ok(())
}

/// The parent of `a:b` is `a`; a top-level key has none.
pub fn parent_key(key: &str) -> Option<&str> {
    key.rsplit_once(':').map(|(parent, _)| parent)
}

fn check_text(value: &str, max: usize, what: &str) -> Result<(), SwitchError> {
    if value.len() > max {
        return Err(invalid(format!("{what} must be at most {max} bytes")));
    }
    Ok(())
}

fn check_values(values: &[String], what: &str) -> Result<(), SwitchError> {
    if values.is_empty() || values.len() > MAX_CONDITION_VALUES {
        return Err(invalid(format!(
            "{what} must list 1 to {MAX_CONDITION_VALUES} values"
        )));
    }
    if values
        .iter()
        .any(|v| v.is_empty() || v.len() > MAX_VALUE_LEN)
    {
        return Err(invalid(format!(
            "each of {what} must be 1 to {MAX_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

impl Condition {
    /// Checks bounds and parses what will be parsed again when compiled.
    pub fn validate(&self) -> Result<(), SwitchError> {
        match self {
            Condition::Percentage { percent } => {
                if !percent.is_finite() || !(0.0..=100.0).contains(percent) {
                    return Err(invalid("percentage.percent must be from 0 to 100"));
                }
            }
            Condition::Users { ids } => check_values(ids, "users.ids")?,
            Condition::Ip { cidrs } => {
                check_values(cidrs, "ip.cidrs")?;
                for cidr in cidrs {
                    Cidr::parse(cidr).ok_or_else(|| {
                        invalid(format!(
                            "ip.cidrs: {:?} is not an IP address or CIDR block",
                            clip(cidr)
                        ))
                    })?;
                }
            }
            Condition::Host { hosts } => check_values(hosts, "host.hosts")?,
            Condition::Environment { environments } => {
                check_values(environments, "environment.environments")?;
            }
            Condition::Attribute { name, op, values } => {
                if name.is_empty() || name.len() > MAX_VALUE_LEN {
                    return Err(invalid(format!(
                        "attribute.name must be 1 to {MAX_VALUE_LEN} bytes"
                    )));
                }
                check_values(values, "attribute.values")?;
                if *op == AttributeOp::Equals && values.len() != 1 {
                    return Err(invalid("attribute `equals` takes exactly one value"));
                }
            }
        }
        Ok(())
    }
}

/// At most 40 characters of untrusted input for an error message.
fn clip(value: &str) -> String {
    value.chars().take(40).collect()
}

impl Switch {
    /// Checks everything the collector relies on before storing the switch.
    pub fn validate(&self) -> Result<(), SwitchError> {
        validate_key(&self.key)?;
        check_text(&self.label, MAX_VALUE_LEN, "label")?;
        check_text(&self.owner, MAX_VALUE_LEN, "owner")?;
        check_text(&self.description, MAX_DESCRIPTION_LEN, "description")?;
        if self.state == SwitchState::Inherit && parent_key(&self.key).is_none() {
            return Err(invalid(
                "only a child switch (`parent:child`) can inherit its parent's state",
            ));
        }
        for (list, what) in [
            (&self.conditions, "conditions"),
            (&self.exclusions, "exclusions"),
        ] {
            if list.len() > MAX_CONDITIONS {
                return Err(invalid(format!(
                    "at most {MAX_CONDITIONS} {what} per switch"
                )));
            }
            for condition in list {
                condition.validate()?;
            }
        }
        Ok(())
    }
}

/// What a check knows about the request it is made for. Every field is optional; a
/// condition on a missing field does not match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalContext {
    /// The user (OpenFeature's targeting key); percentages and user lists need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The host the app runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The deployment environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Anything else the app wants to target on (`plan`, `country`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl EvalContext {
    /// An empty context.
    pub fn new() -> EvalContext {
        EvalContext::default()
    }

    /// Sets the user id.
    pub fn user(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the client address.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets the environment.
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = Some(env.into());
        self
    }

    /// Sets an attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }
}

/// The bucket, 0 to [`PERCENT_BUCKETS`] − 1, a user falls in for a switch: 64-bit
/// FNV-1a over `key`, a 0 byte and `user_id`, then the murmur3 64-bit finaliser so
/// that similar ids (`user-1`, `user-2`, …) spread evenly. Stable forever: changing it
/// would move users in and out of every rollout.
pub fn percentage_bucket(key: &str, user_id: &str) -> u32 {
    bucket_after(switch_prefix(key), user_id)
}

/// The FNV state after `key` and its separator: what every user's bucket of one switch
/// starts from, so a compiled switch hashes only the user id.
fn switch_prefix(key: &str) -> Fnv1a {
    let mut h = Fnv1a::default();
    h.write(key.as_bytes());
    h.write(&[0]);
    h
}

/// [`percentage_bucket`] from the switch's [`switch_prefix`].
fn bucket_after(mut h: Fnv1a, user_id: &str) -> u32 {
    h.write(user_id.as_bytes());
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    // Below 10,000, so the cast cannot truncate.
    (x % u64::from(PERCENT_BUCKETS)) as u32
}

/// 64-bit FNV-1a, written out: std's `DefaultHasher` may change between releases.
#[derive(Clone, Copy, Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The in-memory index's hash: eight bytes per multiply instead of FNV's one, so a
/// 20-byte key costs three rounds. Not stable across releases and never stored or sent;
/// the keys and user ids it indexes are the admin's, so no caller can flood a bucket.
#[derive(Clone, Copy, Default)]
struct WordHash(u64);

impl Hasher for WordHash {
    fn finish(&self) -> u64 {
        // A final avalanche: hashbrown takes its control bits from the top seven.
        let x = self.0 ^ (self.0 >> 29);
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in chunks.by_ref() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            let word = u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59);
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
    }
}

/// An address block; a single address is a block of its full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max)?
            }
            Some(_) => return None,
            None => max,
        };
        Some(Cidr { network, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn compile(conditions: &[Condition], key: &str) -> Vec<Compiled> {
    conditions.iter().map(|c| Compiled::new(c, key)).collect()
}

/// A condition ready to evaluate: values parsed, lists turned into sets.
#[derive(Debug)]
enum Compiled {
    /// Basis points let in, and the hash state after the switch's key.
    Percentage(u32, Fnv1a),
    /// Hashed like the key index: the set is the admin's (at most 1,000 ids), so an
    /// attacker choosing the looked-up id cannot flood a bucket.
    Users(std::collections::HashSet<String, BuildHasherDefault<WordHash>>),
    Ip(Vec<Cidr>),
    Host(Vec<String>),
    Environment(Vec<String>),
    Attribute {
        name: String,
        op: AttributeOp,
        values: Vec<String>,
    },
}

impl Compiled {
    /// Compiles a condition; values that do not parse are left out (the collector never
    /// stores them, so this only matters for hand-made snapshots).
    fn new(condition: &Condition, key: &str) -> Compiled {
        match condition {
            Condition::Percentage { percent } => {
                let bp = (percent.clamp(0.0, 100.0) * 100.0).round();
                // Clamped to 0..=10,000 above.
                Compiled::Percentage(bp as u32, switch_prefix(key))
            }
            Condition::Users { ids } => Compiled::Users(ids.iter().cloned().collect()),
            Condition::Ip { cidrs } => {
                Compiled::Ip(cidrs.iter().filter_map(|c| Cidr::parse(c)).collect())
            }
            Condition::Host { hosts } => Compiled::Host(hosts.clone()),
            Condition::Environment { environments } => Compiled::Environment(environments.clone()),
            Condition::Attribute { name, op, values } => Compiled::Attribute {
                name: name.clone(),
                op: *op,
                values: values.clone(),
            },
        }
    }

    fn matches(&self, ctx: &EvalContext) -> bool {
        let listed = |list: &[String], value: &Option<String>| {
            value
                .as_deref()
                .is_some_and(|v| list.iter().any(|x| x == v))
        };
        match self {
            Compiled::Percentage(bp, prefix) => ctx
                .user_id
                .as_deref()
                .is_some_and(|user| bucket_after(*prefix, user) < *bp),
            Compiled::Users(ids) => ctx.user_id.as_ref().is_some_and(|u| ids.contains(u)),
            Compiled::Ip(cidrs) => ctx
                .ip
                .is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip))),
            Compiled::Host(hosts) => listed(hosts, &ctx.host),
            Compiled::Environment(envs) => listed(envs, &ctx.environment),
            Compiled::Attribute { name, op, values } => {
                ctx.attributes.get(name).is_some_and(|v| match op {
                    AttributeOp::Equals | AttributeOp::In => values.iter().any(|x| x == v),
                    AttributeOp::Prefix => values.iter().any(|x| v.starts_with(x.as_str())),
                })
            }
        }
    }
}

/// Why a switch evaluated the way it did (mapped onto OpenFeature's reasons by OFREP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// State `on`.
    On,
    /// State `off`.
    Off,
    /// Selective, and an exclusion matched.
    Excluded,
    /// Selective, and a percentage condition let the user in.
    Split,
    /// Selective, and another inclusion matched.
    Matched,
    /// Selective, and nothing matched.
    NoMatch,
    /// `inherit` whose parent does not exist: the switch's `default`.
    Default,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// On or off.
    pub active: bool,
    /// Why; for an inheriting switch, the reason of the ancestor that decided.
    pub reason: Reason,
    /// Whether an ancestor decided (`inherit`).
    pub inherited: bool,
}

/// One switch, compiled.
#[derive(Debug)]
struct Entry {
    switch: Switch,
    conditions: Vec<Compiled>,
    exclusions: Vec<Compiled>,
    /// For `inherit`: index of the parent switch, if it exists.
    parent: Option<u32>,
    /// Checks since the counts were last taken.
    evaluations: AtomicU64,
}

/// The state of every switch at one version, as the collector streams it to agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Increases with every change on the collector; `0` is the empty start.
    pub version: u64,
    /// Every switch, in key order.
    pub switches: Vec<Switch>,
}

type KeyMap<V> = HashMap<Box<str>, V, BuildHasherDefault<WordHash>>;

/// A compiled, immutable [`Snapshot`]: evaluates any switch in nanoseconds without
/// locks, and counts the checks per switch (relaxed atomics) for stale-switch hints.
#[derive(Debug, Default)]
pub struct SwitchSet {
    version: u64,
    entries: Vec<Entry>,
    /// [`WordHash`] rather than SipHash: keys are short and come from the app's own
    /// code, and the lookup is most of the cost of a check.
    index: KeyMap<u32>,
}

impl SwitchSet {
    /// Compiles a snapshot. Never fails: whatever does not parse is left out of its
    /// condition, so an agent keeps working on any snapshot.
    pub fn new(snapshot: Snapshot) -> SwitchSet {
        let mut index = KeyMap::default();
        for (i, switch) in snapshot.switches.iter().enumerate() {
            if let Ok(i) = u32::try_from(i) {
                index.insert(switch.key.as_str().into(), i);
            }
        }
        let entries = snapshot
            .switches
            .into_iter()
            .map(|switch| {
                let parent = parent_key(&switch.key).and_then(|p| index.get(p).copied());
                Entry {
                    conditions: compile(&switch.conditions, &switch.key),
                    exclusions: compile(&switch.exclusions, &switch.key),
                    parent,
                    evaluations: AtomicU64::new(0),
                    switch,
                }
            })
            .collect();
        SwitchSet {
            version: snapshot.version,
            entries,
            index,
        }
    }

    /// The collector's version of this snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of switches.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no switches.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One switch's definition.
    pub fn get(&self, key: &str) -> Option<&Switch> {
        self.index
            .get(key)
            .map(|&i| &self.entries[i as usize].switch)
    }

    /// Every definition, in snapshot order.
    pub fn switches(&self) -> impl Iterator<Item = &Switch> {
        self.entries.iter().map(|e| &e.switch)
    }

    /// The snapshot this set was compiled from (cloned).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            switches: self.switches().cloned().collect(),
        }
    }

    /// Whether switch `key` is on for `ctx`; `None` when there is no such switch.
    /// Counts the check.
    pub fn is_active(&self, key: &str, ctx: &EvalContext) -> Option<bool> {
        self.evaluate(key, ctx).map(|e| e.active)
    }

    /// Evaluates switch `key` for `ctx`, with the reason; `None` when there is no such
    /// switch. Counts the check.
    pub fn evaluate(&self, key: &str, ctx: &EvalContext) -> Option<Evaluation> {
        let i = *self.index.get(key)?;
        let entry = &self.entries[i as usize];
        entry.evaluations.fetch_add(1, Ordering::Relaxed);
        Some(self.eval(i, ctx))
    }

    /// Keys of the switches on for `ctx`, in snapshot order. Does not count as checks.
    pub fn active_keys<'a>(&'a self, ctx: &'a EvalContext) -> impl Iterator<Item = &'a str> {
        (0..self.entries.len()).filter_map(move |i| {
            let i = u32::try_from(i).ok()?;
            self.eval(i, ctx)
                .active
                .then(|| self.entries[i as usize].switch.key.as_str())
        })
    }

    /// Takes the check counts since the last call (non-zero ones only).
    pub fn take_evaluations(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let n = e.evaluations.swap(0, Ordering::Relaxed);
                (n > 0).then(|| (e.switch.key.clone(), n))
            })
            .collect()
    }

    fn eval(&self, mut i: u32, ctx: &EvalContext) -> Evaluation {
        let mut inherited = false;
        // Depth is bounded by MAX_SWITCH_DEPTH for valid keys; the step bound keeps a
        // hand-made snapshot from looping.
        for _ in 0..=MAX_SWITCH_DEPTH {
            let entry = &self.entries[i as usize];
            let (active, reason) = match entry.switch.state {
                SwitchState::On => (true, Reason::On),
                SwitchState::Off => (false, Reason::Off),
                SwitchState::Selective => {
                    if entry.exclusions.iter().any(|c| c.matches(ctx)) {
                        (false, Reason::Excluded)
                    } else if let Some(c) = entry.conditions.iter().find(|c| c.matches(ctx)) {
                        let reason = match c {
                            Compiled::Percentage(..) => Reason::Split,
                            _ => Reason::Matched,
                        };
                        (true, reason)
                    } else {
                        (false, Reason::NoMatch)
                    }
                }
                SwitchState::Inherit => match entry.parent {
                    Some(parent) if parent != i => {
                        i = parent;
                        inherited = true;
                        continue;
                    }
                    _ => (entry.switch.default, Reason::Default),
                },
            };
            return Evaluation {
                active,
                reason,
                inherited,
            };
        }
        Evaluation {
            active: self.entries[i as usize].switch.default,
            reason: Reason::Default,
            inherited,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn switch(key: &str, state: SwitchState) -> Switch {
        Switch {
            key: key.into(),
            label: String::new(),
            description: String::new(),
            owner: String::new(),
            default: false,
            state,
            conditions: Vec::new(),
            exclusions: Vec::new(),
        }
    }

    fn set(switches: Vec<Switch>) -> SwitchSet {
        SwitchSet::new(Snapshot {
            version: 1,
            switches,
        })
    }

    fn percent(p: f64) -> Condition {
        Condition::Percentage { percent: p }
    }

    fn user(id: &str) -> EvalContext {
        EvalContext::new().user(id)
    }

    #[test]
    fn keys_are_checked() {
        for good in ["a", "comments:new_editor", "a:b:c:d", "x-1.2_3"] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "A",
            "a::b",
            ":a",
            "a:",
            "a b",
            "a:b:c:d:e",
            "é",
            &"a".repeat(129),
        ] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
        assert_eq!(parent_key("a:b:c"), Some("a:b"));
        assert_eq!(parent_key("a"), None);
    }

    #[test]
    fn definitions_are_checked() {
        let mut s = switch("a", SwitchState::Inherit);
        assert!(s.validate().is_err(), "top-level inherit");
        s.key = "a:b".into();
        assert_eq!(s.validate(), Ok(()));
        let bad = [
            percent(100.5),
            percent(f64::NAN),
            Condition::Users { ids: vec![] },
            Condition::Ip {
                cidrs: vec!["10.0.0.0/33".into()],
            },
            Condition::Ip {
                cidrs: vec!["10.0.0/8".into()],
            },
            Condition::Ip {
                cidrs: vec!["::1/129".into()],
            },
            Condition::Attribute {
                name: "plan".into(),
                op: AttributeOp::Equals,
                values: vec!["a".into(), "b".into()],
            },
            Condition::Users {
                ids: vec!["u".into(); MAX_CONDITION_VALUES + 1],
            },
        ];
        for condition in bad {
            let mut s = switch("a", SwitchState::Selective);
            s.conditions.push(condition.clone());
            assert!(s.validate().is_err(), "{condition:?}");
        }
        let mut s = switch("a", SwitchState::Selective);
        s.exclusions = vec![percent(1.0); MAX_CONDITIONS + 1];
        assert!(s.validate().is_err());
    }

    #[test]
    fn conditions_match_their_context_field() {
        let mut s = switch("a", SwitchState::Selective);
        s.conditions = vec![
            Condition::Users {
                ids: vec!["alice".into()],
            },
            Condition::Ip {
                cidrs: vec!["10.1.0.0/16".into(), "2001:db8::/32".into()],
            },
            Condition::Host {
                hosts: vec!["web-1".into()],
            },
            Condition::Environment {
                environments: vec!["staging".into()],
            },
            Condition::Attribute {
                name: "plan".into(),
                op: AttributeOp::Prefix,
                values: vec!["pro".into()],
            },
        ];
        let set = set(vec![s]);
        let on = |ctx: EvalContext| set.is_active("a", &ctx).unwrap();
        assert!(on(user("alice")));
        assert!(!on(user("bob")));
        assert!(on(EvalContext::new().ip("10.1.200.3".parse().unwrap())));
        assert!(on(EvalContext::new().ip("::ffff:10.1.0.1".parse().unwrap())));
        assert!(!on(EvalContext::new().ip("10.2.0.1".parse().unwrap())));
        assert!(on(EvalContext::new().ip("2001:db8:1::5".parse().unwrap())));
        assert!(!on(EvalContext::new().ip("2001:db9::5".parse().unwrap())));
        assert!(on(EvalContext::new().host("web-1")));
        assert!(on(EvalContext::new().environment("staging")));
        assert!(!on(EvalContext::new().environment("production")));
        assert!(on(EvalContext::new().attribute("plan", "pro-annual")));
        assert!(!on(EvalContext::new().attribute("plan", "free")));
        assert!(!on(EvalContext::new()));
        assert_eq!(set.is_active("missing", &EvalContext::new()), None);
    }

    #[test]
    fn checks_are_counted_and_taken() {
        let set = set(vec![
            switch("a", SwitchState::On),
            switch("b", SwitchState::Off),
        ]);
        for _ in 0..3 {
            set.is_active("a", &EvalContext::new());
        }
        set.is_active("nope", &EvalContext::new());
        assert_eq!(set.take_evaluations(), vec![("a".to_owned(), 3)]);
        assert_eq!(set.take_evaluations(), vec![]);
    }

    #[test]
    fn snapshot_round_trips_and_refuses_unknown_fields() {
        let mut s = switch("a:b", SwitchState::Selective);
        s.conditions.push(percent(12.5));
        s.exclusions.push(Condition::Attribute {
            name: "plan".into(),
            op: AttributeOp::In,
            values: vec!["free".into()],
        });
        let snapshot = Snapshot {
            version: 7,
            switches: vec![s],
        };
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["switches"][0]["conditions"][0]["kind"], "percentage");
        assert_eq!(json["switches"][0]["state"], "selective");
        let back: Snapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, snapshot);
        assert_eq!(SwitchSet::new(back).snapshot(), snapshot);
        let mut extra = json;
        extra["switches"][0]["surprise"] = 1.into();
        assert!(serde_json::from_value::<Snapshot>(extra).is_err());
    }

    #[test]
    fn the_bucket_hash_is_pinned() {
        // Changing the hash would move users in and out of every live rollout.
        assert_eq!(percentage_bucket("comments:new_editor", "user-1"), 1540);
        assert_eq!(percentage_bucket("a", ""), 2981);
        let mut h = Fnv1a::default();
        h.write(b"foobar");
        assert_eq!(h.finish(), 0x8594_4171_f739_67e8);
    }

    fn rollout(key: &str, p: f64) -> SwitchSet {
        let mut s = switch(key, SwitchState::Selective);
        s.conditions.push(percent(p));
        set(vec![s])
    }

    proptest! {
        #[test]
        fn percentage_is_sticky_and_monotone(
            key in "[a-z]{1,8}(:[a-z_]{1,8})?",
            ids in proptest::collection::vec("[a-zA-Z0-9-]{1,24}", 1..200),
            low in 0.0f64..=100.0,
            raise in 0.0f64..=100.0,
        ) {
            let high = (low + raise).min(100.0);
            let lower = rollout(&key, low);
            let again = rollout(&key, low);
            let higher = rollout(&key, high);
            for id in &ids {
                let ctx = user(id);
                let before = lower.is_active(&key, &ctx).unwrap();
                prop_assert_eq!(before, again.is_active(&key, &ctx).unwrap(), "sticky");
                if before {
                    prop_assert!(higher.is_active(&key, &ctx).unwrap(), "{} left at {}%", id, high);
                }
            }
        }

        #[test]
        fn exclusions_beat_inclusions(
            id in "[a-z0-9]{1,16}",
            ip in any::<[u8; 4]>(),
            env in "[a-z]{1,8}",
        ) {
            let ctx = EvalContext::new()
                .user(id.clone())
                .ip(std::net::Ipv4Addr::from(ip).into())
                .environment(env.clone());
            let inclusions = [
                percent(100.0),
                Condition::Users { ids: vec![id.clone()] },
                Condition::Environment { environments: vec![env.clone()] },
            ];
            let exclusions = [
                Condition::Users { ids: vec![id.clone()] },
                Condition::Ip { cidrs: vec![format!("{}.0.0.0/8", ip[0])] },
                Condition::Environment { environments: vec![env.clone()] },
                Condition::Attribute { name: "x".into(), op: AttributeOp::Prefix, values: vec!["".into(), "a".into()] },
            ];
            for include in &inclusions {
                for exclude in &exclusions {
                    let mut s = switch("a", SwitchState::Selective);
                    s.conditions.push(include.clone());
                    let included = set(vec![s.clone()]).is_active("a", &ctx).unwrap();
                    prop_assert!(included, "{:?}", include);
                    s.exclusions.push(exclude.clone());
                    let ctx = ctx.clone().attribute("x", "abc");
                    let outcome = set(vec![s]).evaluate("a", &ctx).unwrap();
                    prop_assert!(!outcome.active, "{:?} vs {:?}", include, exclude);
                    prop_assert_eq!(outcome.reason, Reason::Excluded);
                }
            }
        }

        #[test]
        fn children_inherit_their_parents_state(
            parent_state in prop_oneof![
                Just(SwitchState::On), Just(SwitchState::Off), Just(SwitchState::Selective)
            ],
            p in 0.0f64..=100.0,
            ids in proptest::collection::vec("[a-z0-9]{1,12}", 1..50),
            grandchild in any::<bool>(),
        ) {
            let mut parent = switch("comments", parent_state);
            parent.conditions.push(percent(p));
            let child = switch("comments:editor", SwitchState::Inherit);
            let leaf = switch("comments:editor:beta", SwitchState::Inherit);
            let key = if grandchild { "comments:editor:beta" } else { "comments:editor" };
            let set = set(vec![leaf, child, parent]);
            for id in &ids {
                let ctx = user(id);
                let expected = set.is_active("comments", &ctx).unwrap();
                let got = set.evaluate(key, &ctx).unwrap();
                prop_assert_eq!(got.active, expected);
                prop_assert!(got.inherited);
            }
        }
    }

    #[test]
    fn an_orphan_inheriting_switch_uses_its_default() {
        let mut orphan = switch("gone:child", SwitchState::Inherit);
        orphan.default = true;
        let got = set(vec![orphan]).evaluate("gone:child", &EvalContext::new());
        assert_eq!(
            got,
            Some(Evaluation {
                active: true,
                reason: Reason::Default,
                inherited: false
            })
        );
    }

    #[test]
    fn rollout_share_is_within_one_percent_over_100k_users() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
        for target in [1.0, 10.0, 25.0, 50.0, 90.0] {
            for key in ["comments:new_editor", "leaderboard:cache"] {
                let set = rollout(key, target);
                let on = ids
                    .iter()
                    .filter(|id| set.is_active(key, &user(id)).unwrap())
                    .count();
                let share = on as f64 / ids.len() as f64 * 100.0;
                assert!(
                    (share - target).abs() <= 1.0,
                    "{key} at {target}%: {share:.3}% of users"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn rollout_share_holds_for_any_key_and_id_shape(
            key in "[a-z]{1,10}:[a-z_]{1,10}",
            prefix in "[a-zA-Z]{0,6}",
            target in 1.0f64..99.0,
        ) {
            let set = rollout(&key, target);
            let on = (0..100_000)
                .filter(|i| set.is_active(&key, &user(&format!("{prefix}{i}"))).unwrap())
                .count();
            let share = on as f64 / 1_000.0;
            prop_assert!((share - target).abs() <= 1.0, "{}%: {}%", target, share);
        }
    }
}
