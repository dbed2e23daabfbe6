//! Judging one repository: which of its manifests the rules keep, which go, and why. Pure:
//! it works on what one read of the repository returned, so a dry run and a run decide the
//! same way, and 100,000 artifacts cost one sort per rule.

use std::collections::{HashMap, HashSet};

use berth_meta::RetentionArtifact;
use serde::{Deserialize, Serialize};

use super::{Compiled, Template};

/// What becomes of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Kept: a rule keeps it, or (a child or referrer) what it hangs from stays.
    Retain,
    /// Kept: no rule keeps it, but one of its tags is immutable.
    Immutable,
    /// Deleted, or that would be in a dry run.
    Delete,
    /// Deleting it failed; it is still there.
    Error,
}

impl Outcome {
    /// Its name in a task's log.
    pub fn label(self, dry_run: bool) -> &'static str {
        match self {
            Self::Retain => "RETAIN",
            Self::Immutable => "IMMUTABLE",
            Self::Delete if dry_run => "WOULD DELETE",
            Self::Delete => "DELETED",
            Self::Error => "ERROR",
        }
    }
}

/// What a manifest is to retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A top-level artifact: the rules judge it.
    Artifact,
    /// A child of an index of the repository: it follows its indexes.
    Child,
    /// A manifest with a `subject` (a signature, an SBOM...): it follows its subject.
    Referrer,
}

/// One manifest of a task: what it is, what became of it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its digest.
    pub digest: String,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When it was pushed (milliseconds since the Unix epoch).
    pub pushed_ms: i64,
    /// When it was last pulled, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_ms: Option<i64>,
    /// What it is.
    pub kind: Kind,
    /// What became of it.
    pub outcome: Outcome,
    /// Why: the rule that keeps it, the immutable tag, or what it followed.
    pub why: String,
    /// For a child or referrer: the manifests it hangs from (its indexes, its subject).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follows: Vec<String>,
    /// Delete order: artifacts first (0), then each follower after what it follows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A short form of a digest for people: `sha256:0123456789ab`.
pub(crate) fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 13).min(digest.len());
    &digest[..end]
}

/// The milliseconds in `days` days.
fn days_ms(days: u32) -> i64 {
    i64::from(days) * 86_400_000
}

/// Whether `rule` selects an artifact with `tags`.
fn selects(rule: &Compiled, tags: &[String]) -> bool {
    if tags.is_empty() {
        rule.selection.untagged()
    } else {
        tags.iter().any(|t| rule.selection.selects_tag(t))
    }
}

/// Newest push first, then by digest (`keys`: the digests as text).
fn newest_push(
    arts: &[RetentionArtifact],
    keys: &[String],
    a: usize,
    b: usize,
) -> std::cmp::Ordering {
    arts[b]
        .pushed_ms
        .cmp(&arts[a].pushed_ms)
        .then_with(|| keys[a].cmp(&keys[b]))
}

/// Which of `selected` (indexes into `arts`, whose digests as text are `keys`) the template
/// keeps.
fn keep(
    template: Template,
    arts: &[RetentionArtifact],
    keys: &[String],
    mut selected: Vec<usize>,
    now_ms: i64,
) -> Vec<usize> {
    let newest_push = |a: &usize, b: &usize| newest_push(arts, keys, *a, *b);
    match template {
        Template::LatestPushed(k) => {
            selected.sort_by(newest_push);
            selected.truncate(k as usize);
            selected
        }
        Template::LatestPulled(n) => {
            // Never pulled sorts as oldest; ties go to the most recently pushed.
            selected.sort_by(|a, b| {
                let pulled = |i: &usize| arts[*i].pulled_ms.unwrap_or(i64::MIN);
                pulled(b).cmp(&pulled(a)).then_with(|| newest_push(a, b))
            });
            selected.truncate(n as usize);
            selected
        }
        Template::PushedWithinDays(d) => {
            let since = now_ms - days_ms(d);
            selected.retain(|i| arts[*i].pushed_ms >= since);
            selected
        }
        Template::PulledWithinDays(d) => {
            let since = now_ms - days_ms(d);
            selected.retain(|i| arts[*i].pulled_ms.is_some_and(|p| p >= since));
            selected
        }
        Template::Always => selected,
        Template::Nothing => Vec::new(),
    }
}

/// Judge the manifests `arts` of one repository (`name` within its project) by `rules` (all
/// enabled, by priority) at time `now_ms`. `immutable` gives the immutability rule that
/// protects a tag, if any. Returns every manifest: the artifacts newest push first, then the
/// children and referrers, each followed by what it depends on.
pub(crate) fn judge(
    rules: &[Compiled],
    name: &str,
    arts: Vec<RetentionArtifact>,
    now_ms: i64,
    immutable: impl Fn(&str) -> Option<i64>,
) -> Vec<Item> {
    let rules: Vec<&Compiled> = rules
        .iter()
        .filter(|r| r.selection.selects_repo(name))
        .collect();
    let keys: Vec<String> = arts.iter().map(|a| a.digest.to_string()).collect();
    let is_artifact = |a: &RetentionArtifact| a.parents.is_empty() && a.subject.is_none();
    let mut candidates: Vec<usize> = (0..arts.len()).filter(|i| is_artifact(&arts[*i])).collect();
    candidates.sort_by(|a, b| newest_push(&arts, &keys, *a, *b));

    // The first rule (by priority) that keeps each artifact, and which rules selected it.
    let mut kept_by: HashMap<usize, &Compiled> = HashMap::new();
    let mut selected_by: HashMap<usize, Vec<i64>> = HashMap::new();
    for rule in &rules {
        let selected: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| selects(rule, &arts[*i].tags))
            .collect();
        for i in &selected {
            selected_by.entry(*i).or_default().push(rule.id);
        }
        for i in keep(rule.template, &arts, &keys, selected, now_ms) {
            kept_by.entry(i).or_insert(rule);
        }
    }

    let mut items: Vec<Item> = Vec::with_capacity(arts.len());
    let item = |a: &RetentionArtifact, kind, outcome, why: String| Item {
        digest: a.digest.to_string(),
        tags: a.tags.clone(),
        pushed_ms: a.pushed_ms,
        pulled_ms: a.pulled_ms,
        kind,
        outcome,
        why,
        follows: Vec::new(),
        depth: 0,
    };
    for i in &candidates {
        let a = &arts[*i];
        let (outcome, why) = if let Some(rule) = kept_by.get(i) {
            (
                Outcome::Retain,
                format!("rule {}: {}", rule.id, rule.template.describe()),
            )
        } else if let Some((tag, rule)) = a.tags.iter().find_map(|t| immutable(t).map(|r| (t, r))) {
            (
                Outcome::Immutable,
                format!("tag {tag} is immutable (immutability rule {rule})"),
            )
        } else {
            let why = match selected_by.get(i) {
                None => "no rule selects it".to_owned(),
                Some(ids) => {
                    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                    format!("selected by rule {}, kept by none", ids.join(", "))
                }
            };
            (Outcome::Delete, why)
        };
        items.push(item(a, Kind::Artifact, outcome, why));
    }

    // Children and referrers follow what they hang from: an untagged one goes once all of
    // it goes. Repeat until nothing changes, for indexes of indexes and signatures of SBOMs.
    let mut depth: HashMap<String, u32> = items
        .iter()
        .filter(|i| i.outcome == Outcome::Delete)
        .map(|i| (i.digest.clone(), 0))
        .collect();
    let present: HashSet<&String> = keys.iter().collect();
    let followers: Vec<&RetentionArtifact> = arts.iter().filter(|a| !is_artifact(a)).collect();
    let hangs_from = |a: &RetentionArtifact| -> Vec<String> {
        a.parents
            .iter()
            .chain(a.subject.iter())
            .map(ToString::to_string)
            .collect()
    };
    let mut decided: HashSet<usize> = HashSet::new();
    loop {
        let mut changed = false;
        for (k, a) in followers.iter().enumerate() {
            if decided.contains(&k) || !a.tags.is_empty() {
                continue;
            }
            let from = hangs_from(a);
            if from.iter().all(|d| depth.contains_key(d)) {
                let d = from
                    .iter()
                    .filter_map(|d| depth.get(d))
                    .max()
                    .copied()
                    .unwrap_or(0)
                    + 1;
                depth.insert(a.digest.to_string(), d);
                decided.insert(k);
                changed = true;
                let kind = if a.parents.is_empty() {
                    Kind::Referrer
                } else {
                    Kind::Child
                };
                let shorts: Vec<&str> = from.iter().map(|d| short(d)).collect();
                let mut it = item(
                    a,
                    kind,
                    Outcome::Delete,
                    format!("follows {}", shorts.join(", ")),
                );
                it.follows = from;
                it.depth = d;
                items.push(it);
            }
        }
        if !changed {
            break;
        }
    }
    for (k, a) in followers.iter().enumerate() {
        if decided.contains(&k) {
            continue;
        }
        let kind = if a.parents.is_empty() {
            Kind::Referrer
        } else {
            Kind::Child
        };
        let from = hangs_from(a);
        let why = if !a.tags.is_empty() {
            "tagged: judged as an artifact once what it hangs from is gone".to_owned()
        } else {
            let staying: Vec<&String> = from.iter().filter(|d| !depth.contains_key(*d)).collect();
            let names: Vec<&str> = staying.iter().map(|d| short(d)).collect();
            if staying.iter().all(|d| present.contains(d)) {
                format!("{} stays", names.join(", "))
            } else {
                format!("{} is not in the repository", names.join(", "))
            }
        };
        let mut it = item(a, kind, Outcome::Retain, why);
        it.follows = from;
        items.push(it);
    }
    items
}

#[cfg(test)]
mod tests {
    use berth_oci::Digest;
    use serde_json::json;

    use super::*;
    use crate::retention::{Policy, Rule};

    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_000 * DAY;

    fn d(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    fn art(
        name: &str,
        tags: &[&str],
        pushed_days_ago: i64,
        pulled_days_ago: Option<i64>,
    ) -> RetentionArtifact {
        RetentionArtifact {
            digest: d(name),
            pushed_ms: NOW - pushed_days_ago * DAY,
            pulled_ms: pulled_days_ago.map(|p| NOW - p * DAY),
            subject: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            parents: Vec::new(),
        }
    }

    fn rules(v: serde_json::Value) -> Vec<Compiled> {
        let rules: Vec<Rule> = serde_json::from_value(v).unwrap();
        Policy {
            rules,
            ..Policy::default()
        }
        .normalized()
        .unwrap()
        .compiled()
        .unwrap()
    }

    fn tags(pattern: &str) -> serde_json::Value {
        json!([{"decoration": "matches", "pattern": pattern}])
    }

    fn outcome(items: &[Item], name: &str) -> Outcome {
        let digest = d(name).to_string();
        items
            .iter()
            .find(|i| i.digest == digest)
            .unwrap_or_else(|| panic!("{name} not judged"))
            .outcome
    }

    fn none(_: &str) -> Option<i64> {
        None
    }

    #[test]
    fn latest_pushed_keeps_the_newest_of_what_it_selects() {
        let arts = vec![
            art("a", &["1"], 5, None),
            art("b", &["2"], 4, None),
            art("c", &["3"], 3, None),
            art("d", &[], 1, None),
        ];
        let r = rules(
            json!([{"template": "latestPushedK", "params": {"latestPushedK": 2},
            "tag_selectors": tags("**")}]),
        );
        let items = judge(&r, "app", arts.clone(), NOW, none);
        assert_eq!(outcome(&items, "c"), Outcome::Retain);
        assert_eq!(outcome(&items, "b"), Outcome::Retain);
        assert_eq!(outcome(&items, "a"), Outcome::Delete);
        // Untagged and not selected: no rule keeps it.
        assert_eq!(outcome(&items, "d"), Outcome::Delete);
        assert_eq!(items[0].digest, d("d").to_string(), "newest push first");
        assert!(items.iter().any(|i| i.why == "no rule selects it"));
        assert!(items
            .iter()
            .any(|i| i.why == "rule 1: the 2 most recently pushed"));
        // Selecting untagged ones too counts them among the newest.
        let r = rules(
            json!([{"template": "latestPushedK", "params": {"latestPushedK": 2},
            "tag_selectors": [{"decoration": "matches", "pattern": "**",
                "extras": "{\"untagged\":true}"}]}]),
        );
        let items = judge(&r, "app", arts, NOW, none);
        assert_eq!(outcome(&items, "d"), Outcome::Retain);
        assert_eq!(outcome(&items, "c"), Outcome::Retain);
        assert_eq!(outcome(&items, "b"), Outcome::Delete);
    }

    #[test]
    fn pull_templates_count_never_pulled_as_oldest() {
        let arts = vec![
            art("a", &["1"], 9, Some(1)),
            art("b", &["2"], 8, None),
            art("c", &["3"], 7, Some(20)),
            art("e", &["4"], 1, None),
        ];
        let r = rules(
            json!([{"template": "latestPulledN", "params": {"latestPulledN": 3},
            "tag_selectors": tags("**")}]),
        );
        let items = judge(&r, "app", arts.clone(), NOW, none);
        assert_eq!(outcome(&items, "a"), Outcome::Retain);
        assert_eq!(outcome(&items, "c"), Outcome::Retain);
        // Of the two never pulled, the newer push goes first.
        assert_eq!(outcome(&items, "e"), Outcome::Retain);
        assert_eq!(outcome(&items, "b"), Outcome::Delete);
        let r = rules(
            json!([{"template": "nDaysSinceLastPull", "params": {"nDaysSinceLastPull": 10},
            "tag_selectors": tags("**")}]),
        );
        let items = judge(&r, "app", arts.clone(), NOW, none);
        let kept: Vec<Outcome> = ["a", "b", "c", "e"]
            .iter()
            .map(|n| outcome(&items, n))
            .collect();
        assert_eq!(
            kept,
            [
                Outcome::Retain,
                Outcome::Delete,
                Outcome::Delete,
                Outcome::Delete
            ]
        );
        let r = rules(
            json!([{"template": "nDaysSinceLastPush", "params": {"nDaysSinceLastPush": 8},
            "tag_selectors": tags("**")}]),
        );
        let items = judge(&r, "app", arts, NOW, none);
        let kept: Vec<Outcome> = ["a", "b", "c", "e"]
            .iter()
            .map(|n| outcome(&items, n))
            .collect();
        assert_eq!(
            kept,
            [
                Outcome::Delete,
                Outcome::Retain,
                Outcome::Retain,
                Outcome::Retain
            ]
        );
    }

    #[test]
    fn rules_combine_with_or_and_scopes_and_immutability_hold() {
        let arts = vec![
            art("rel", &["release-1"], 50, None),
            art("dev", &["dev-1"], 40, None),
            art("both", &["dev-2", "release-2"], 60, None),
            art("pinned", &["v1"], 70, None),
        ];
        let r = rules(json!([
            {"template": "always", "tag_selectors": tags("release-*")},
            {"template": "nothing", "tag_selectors": tags("dev-*")},
            {"template": "always", "tag_selectors": tags("**"), "disabled": true},
            {"template": "always", "tag_selectors": tags("**"),
             "scope_selectors": {"repository": [{"decoration": "repoMatches", "pattern": "other"}]}}
        ]));
        let protect = |t: &str| (t == "v1").then_some(9);
        let items = judge(&r, "app", arts, NOW, protect);
        assert_eq!(outcome(&items, "rel"), Outcome::Retain);
        assert_eq!(
            outcome(&items, "both"),
            Outcome::Retain,
            "one tag is enough"
        );
        assert_eq!(outcome(&items, "dev"), Outcome::Delete);
        assert_eq!(outcome(&items, "pinned"), Outcome::Immutable);
        let dev = items
            .iter()
            .find(|i| i.digest == d("dev").to_string())
            .unwrap();
        assert_eq!(dev.why, "selected by rule 2, kept by none");
        let pinned = items
            .iter()
            .find(|i| i.digest == d("pinned").to_string())
            .unwrap();
        assert!(pinned.why.contains("tag v1 is immutable"), "{}", pinned.why);
    }

    #[test]
    fn children_and_referrers_follow_what_they_hang_from() {
        let keep_tag =
            |tag: &str| rules(json!([{"template": "always", "tag_selectors": tags(tag)}]));
        let mut arts = vec![
            art("old-index", &["old"], 9, None),
            art("new-index", &["new"], 1, None),
            art("shared-child", &[], 9, None),
            art("old-child", &[], 9, None),
            art("tagged-child", &["amd64"], 9, None),
            art("sig", &[], 9, None),
            art("sig-of-sig", &[], 9, None),
            art("dangling", &[], 9, None),
        ];
        arts[2].parents = vec![d("old-index"), d("new-index")];
        arts[3].parents = vec![d("old-index")];
        arts[4].parents = vec![d("old-index")];
        arts[5].subject = Some(d("old-index"));
        arts[6].subject = Some(d("sig"));
        arts[7].subject = Some(d("elsewhere"));
        let items = judge(&keep_tag("new"), "app", arts.clone(), NOW, none);
        assert_eq!(outcome(&items, "old-index"), Outcome::Delete);
        assert_eq!(outcome(&items, "new-index"), Outcome::Retain);
        assert_eq!(outcome(&items, "old-child"), Outcome::Delete);
        assert_eq!(outcome(&items, "shared-child"), Outcome::Retain);
        assert_eq!(outcome(&items, "tagged-child"), Outcome::Retain);
        assert_eq!(outcome(&items, "sig"), Outcome::Delete);
        assert_eq!(outcome(&items, "sig-of-sig"), Outcome::Delete);
        assert_eq!(outcome(&items, "dangling"), Outcome::Retain);
        let depth = |n: &str| {
            items
                .iter()
                .find(|i| i.digest == d(n).to_string())
                .unwrap()
                .depth
        };
        assert_eq!(
            (depth("old-index"), depth("sig"), depth("sig-of-sig")),
            (0, 1, 2)
        );
        assert_eq!(items.len(), arts.len(), "every manifest is reported once");
        let total: Vec<Kind> = items.iter().map(|i| i.kind).collect();
        assert_eq!(total.iter().filter(|k| **k == Kind::Artifact).count(), 2);
        // When both indexes go, so does what they share.
        let items = judge(&keep_tag("none"), "app", arts, NOW, none);
        assert_eq!(outcome(&items, "shared-child"), Outcome::Delete);
    }
}
