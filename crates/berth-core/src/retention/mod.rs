//! Retention policies (Harbor's tag retention): per project, rules that say which artifacts
//! to keep; a run deletes the rest, or in a dry run only says what it would delete.
//!
//! A policy's rules are combined with "or": an artifact is kept if any enabled rule keeps it.
//! A rule *selects* the artifacts of the repositories its scope selectors match that have a
//! tag its tag selectors match (or no tag, when a tag selector's extras say
//! `{"untagged":true}`), and its template says which of those it keeps:
//!
//! | template | keeps |
//! |---|---|
//! | `latestPushedK` | the K most recently pushed |
//! | `latestPulledN` | the N most recently pulled (never pulled counts as oldest) |
//! | `nDaysSinceLastPush` | those pushed within the last N days |
//! | `nDaysSinceLastPull` | those pulled within the last N days |
//! | `always` | all of them |
//! | `nothing` | none of them |
//!
//! A run looks only at the repositories that at least one enabled rule's scope selects; in
//! each, the *candidates* are the top-level artifacts: manifests that no index of the
//! repository names and that have no `subject`. Every candidate no rule keeps is deleted,
//! through [`Registry::delete_manifest`](crate::Registry::delete_manifest) by digest (so
//! quotas, the audit log and immutability apply), except those with an immutable tag, which
//! are kept and reported as such. The children of an index and the referrers of an artifact
//! follow it: an untagged one goes when everything it hangs from goes. Deletes run parents
//! first, then what follows them.
//!
//! A run is a `retention.run` job ([`RetentionWorker`]) with one task per repository. The
//! task's plan (every manifest, and what becomes of it and why) is recorded before anything
//! is deleted, so a run that is killed resumes with the same plan, and a dry run reports
//! exactly what a run with the same artifacts deletes. Schedules (a cron expression per
//! policy) are checked by one periodic job for the whole fleet ([`RetentionScheduler`]).
//! Policies are managed through [`crate::Admin`].

mod evaluate;
pub mod report;
mod run;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::selector::{ScopeSelectors, Selection, Selector};
use crate::Error;

pub use evaluate::{Item, Kind, Outcome};
pub use run::{RetentionScheduler, RetentionWorker};

/// Most rules a policy may have (Harbor's limit).
pub const MAX_RULES: usize = 15;

/// Largest count or number of days a template takes (Harbor's: below `i16::MAX`).
pub const MAX_PARAM: u32 = i16::MAX as u32 - 1;

/// What a rule keeps of what it selects (Harbor's rule templates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `latestPushedK`: the K most recently pushed.
    LatestPushed(u32),
    /// `latestPulledN`: the N most recently pulled; never pulled counts as oldest.
    LatestPulled(u32),
    /// `nDaysSinceLastPush`: those pushed within the last N days.
    PushedWithinDays(u32),
    /// `nDaysSinceLastPull`: those pulled within the last N days.
    PulledWithinDays(u32),
    /// `always`: all of them.
    Always,
    /// `nothing`: none of them.
    Nothing,
}

/// A template as `GET /retentions/metadatas` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its name (`rule_template`), which is also the name of its parameter.
    pub name: &'static str,
    /// What it keeps, with `#` for its parameter.
    pub display: &'static str,
    /// Its parameter's unit (`COUNT` or `DAYS`), if it takes one.
    pub unit: Option<&'static str>,
}

/// Every template, in Harbor's order.
pub const TEMPLATES: [TemplateInfo; 6] = [
    TemplateInfo {
        name: "latestPushedK",
        display: "the most recently pushed # artifacts",
        unit: Some("COUNT"),
    },
    TemplateInfo {
        name: "latestPulledN",
        display: "the most recently pulled # artifacts",
        unit: Some("COUNT"),
    },
    TemplateInfo {
        name: "nDaysSinceLastPush",
        display: "pushed within the last # days",
        unit: Some("DAYS"),
    },
    TemplateInfo {
        name: "nDaysSinceLastPull",
        display: "pulled within the last # days",
        unit: Some("DAYS"),
    },
    TemplateInfo {
        name: "always",
        display: "always",
        unit: None,
    },
    TemplateInfo {
        name: "nothing",
        display: "none",
        unit: None,
    },
];

impl Template {
    /// The template named `name`, with its parameter from `params` (keyed by the template's
    /// name, as Harbor's are: `{"latestPushedK": 10}`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown template, or a missing or bad parameter.
    pub fn parse(name: &str, params: &Map<String, Value>) -> Result<Self, Error> {
        let param = || -> Result<u32, Error> {
            let v = params.get(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "template {name} needs the parameter {name} (params: {{\"{name}\": N}})"
                ))
            })?;
            let n = match v {
                Value::Number(n) => n.as_u64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                }),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n <= u64::from(MAX_PARAM) => Ok(n as u32),
                _ => Err(Error::Invalid(format!(
                    "parameter {name} must be a whole number from 0 to {MAX_PARAM}, not {v}"
                ))),
            }
        };
        Ok(match name {
            "latestPushedK" => Self::LatestPushed(param()?),
            "latestPulledN" => Self::LatestPulled(param()?),
            "nDaysSinceLastPush" => Self::PushedWithinDays(param()?),
            "nDaysSinceLastPull" => Self::PulledWithinDays(param()?),
            "always" => Self::Always,
            "nothing" => Self::Nothing,
            other => {
                let known: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
                return Err(Error::Invalid(format!(
                    "rule template {other:?} is not one of {}",
                    known.join(", ")
                )));
            }
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::LatestPushed(_) => "latestPushedK",
            Self::LatestPulled(_) => "latestPulledN",
            Self::PushedWithinDays(_) => "nDaysSinceLastPush",
            Self::PulledWithinDays(_) => "nDaysSinceLastPull",
            Self::Always => "always",
            Self::Nothing => "nothing",
        }
    }

    /// Its parameter, if it takes one.
    pub fn param(self) -> Option<u32> {
        match self {
            Self::LatestPushed(n)
            | Self::LatestPulled(n)
            | Self::PushedWithinDays(n)
            | Self::PulledWithinDays(n) => Some(n),
            Self::Always | Self::Nothing => None,
        }
    }

    /// What it keeps, for people: "the 3 most recently pushed".
    pub fn describe(self) -> String {
        match self {
            Self::LatestPushed(n) => format!("the {n} most recently pushed"),
            Self::LatestPulled(n) => format!("the {n} most recently pulled"),
            Self::PushedWithinDays(n) => format!("pushed within the last {n} days"),
            Self::PulledWithinDays(n) => format!("pulled within the last {n} days"),
            Self::Always => "always".into(),
            Self::Nothing => "none".into(),
        }
    }
}

/// A retention rule, in Harbor's shape (as the API carries it and the store keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Its id within the policy (the policy numbers its rules from 1 when it is saved).
    #[serde(default)]
    pub id: i64,
    /// Its priority (kept and shown; with "or" it only orders which rule a report names).
    #[serde(default)]
    pub priority: i64,
    /// Whether it is off.
    #[serde(default)]
    pub disabled: bool,
    /// Always `retain`.
    #[serde(default = "retain")]
    pub action: String,
    /// Its template ([`Template`]).
    pub template: String,
    /// Its template's parameter, keyed by the template's name.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Which tags (all must match one of an artifact's tags).
    #[serde(default)]
    pub tag_selectors: Vec<Selector>,
    /// Which repositories.
    #[serde(default)]
    pub scope_selectors: ScopeSelectors,
}

fn retain() -> String {
    "retain".into()
}

/// A policy's rules and schedule: what a caller sets, and what the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// How the rules combine: only `or`.
    #[serde(default = "or")]
    pub algorithm: String,
    /// Its rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// When it runs by itself: a cron expression with seconds (`sec min hour day month
    /// weekday`, UTC); `None`: only when asked. Kept in its own column, not in the JSON.
    #[serde(skip)]
    pub schedule: Option<String>,
}

fn or() -> String {
    "or".into()
}

impl Default for Policy {
    /// No rules, no schedule, `or`.
    fn default() -> Self {
        Self {
            algorithm: or(),
            rules: Vec::new(),
            schedule: None,
        }
    }
}

/// A rule ready to judge artifacts.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) id: i64,
    pub(crate) priority: i64,
    pub(crate) template: Template,
    pub(crate) selection: Selection,
}

/// A cron expression with seconds, checked.
///
/// # Errors
/// [`Error::Invalid`] if it does not parse.
pub fn parse_cron(cron: &str) -> Result<cron::Schedule, Error> {
    use std::str::FromStr;
    cron::Schedule::from_str(cron).map_err(|e| {
        Error::Invalid(format!(
            "cron {cron:?} does not parse ({e}); use six fields: sec min hour day month weekday"
        ))
    })
}

/// When a schedule `cron` fires next after `after_ms` (milliseconds since the Unix epoch).
pub fn next_run(cron: &str, after_ms: i64) -> Option<i64> {
    let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
    parse_cron(cron)
        .ok()?
        .after(&after)
        .next()
        .map(|t| t.timestamp_millis())
}

impl Policy {
    /// Check it and put it in the form it is stored in: `or`, at most [`MAX_RULES`] rules,
    /// each `retain` with a known template and its parameter, selectors that compile, no two
    /// rules alike, and a schedule that parses (an empty one is none). Rules are numbered
    /// from 1 in their order.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is wrong.
    pub fn normalized(mut self) -> Result<Self, Error> {
        if self.algorithm != "or" {
            return Err(Error::Invalid(format!(
                "algorithm must be \"or\", not {:?}",
                self.algorithm
            )));
        }
        if self.rules.len() > MAX_RULES {
            return Err(Error::Invalid(format!(
                "a retention policy has at most {MAX_RULES} rules, not {}",
                self.rules.len()
            )));
        }
        for (i, rule) in self.rules.iter_mut().enumerate() {
            rule.id = i as i64 + 1;
            if rule.action != "retain" {
                return Err(Error::Invalid(format!(
                    "rule {}: action must be \"retain\", not {:?}",
                    rule.id, rule.action
                )));
            }
            compile(rule).map_err(|e| Error::Invalid(format!("rule {}: {e}", rule.id)))?;
        }
        for (i, a) in self.rules.iter().enumerate() {
            if let Some(b) = self.rules[..i].iter().find(|b| same_rule(a, b)) {
                return Err(Error::Invalid(format!(
                    "rule {} is the same as rule {}",
                    a.id, b.id
                )));
            }
        }
        self.schedule = match self.schedule.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(cron) => {
                parse_cron(cron)?;
                Some(cron.to_owned())
            }
        };
        Ok(self)
    }

    /// The JSON text the store keeps (the rules; the schedule has its own column).
    ///
    /// # Errors
    /// [`Error::Internal`] if it cannot be encoded.
    pub fn to_stored(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::Internal(format!("encoding a policy: {e}")))
    }

    /// A stored policy.
    ///
    /// # Errors
    /// [`Error::Internal`] if its rules are not what Berth stored.
    pub fn from_stored(rules: &str, schedule: Option<&str>) -> Result<Self, Error> {
        let mut p: Self = serde_json::from_str(rules)
            .map_err(|e| Error::Internal(format!("stored retention rules do not parse: {e}")))?;
        p.schedule = schedule.map(str::to_owned);
        Ok(p)
    }

    /// Its enabled rules, compiled, by priority then id.
    pub(crate) fn compiled(&self) -> Result<Vec<Compiled>, Error> {
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| !r.disabled) {
            out.push(compile(rule)?);
        }
        out.sort_by_key(|c| (c.priority, c.id));
        Ok(out)
    }
}

fn compile(rule: &Rule) -> Result<Compiled, Error> {
    Ok(Compiled {
        id: rule.id,
        priority: rule.priority,
        template: Template::parse(&rule.template, &rule.params)?,
        selection: Selection::new(&rule.scope_selectors, &rule.tag_selectors)?,
    })
}

/// Whether two rules are alike but for their ids (Harbor refuses such a pair).
fn same_rule(a: &Rule, b: &Rule) -> bool {
    Rule { id: 0, ..a.clone() } == Rule { id: 0, ..b.clone() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(v: Value) -> Rule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn templates_parse_with_their_parameter() {
        let p = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            Template::parse("latestPushedK", &p(json!({"latestPushedK": 3}))).unwrap(),
            Template::LatestPushed(3)
        );
        assert_eq!(
            Template::parse("nDaysSinceLastPull", &p(json!({"nDaysSinceLastPull": "7"}))).unwrap(),
            Template::PulledWithinDays(7)
        );
        assert_eq!(
            Template::parse("always", &Map::new()).unwrap(),
            Template::Always
        );
        for (name, params) in [
            ("latestPushedK", json!({})),
            ("latestPushedK", json!({"latestPulledN": 3})),
            ("latestPulledN", json!({"latestPulledN": -1})),
            ("latestPulledN", json!({"latestPulledN": 1.5})),
            ("nDaysSinceLastPush", json!({"nDaysSinceLastPush": 40000})),
            ("nDaysSinceLastPush", json!({"nDaysSinceLastPush": [1]})),
            ("latestK", json!({"latestK": 1})),
        ] {
            assert!(
                matches!(
                    Template::parse(name, &p(params.clone())),
                    Err(Error::Invalid(_))
                ),
                "{name} {params}"
            );
        }
        for t in TEMPLATES {
            let mut params = Map::new();
            params.insert(t.name.into(), json!(2));
            let parsed = Template::parse(t.name, &params).unwrap();
            assert_eq!(parsed.name(), t.name);
            assert_eq!(parsed.param().is_some(), t.unit.is_some());
        }
    }

    #[test]
    fn policies_are_checked_and_numbered() {
        let keep3 = json!({"template": "latestPushedK", "params": {"latestPushedK": 3},
            "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}],
            "scope_selectors": {"repository": [{"kind": "doublestar",
                "decoration": "repoMatches", "pattern": "**"}]}});
        let always = json!({"template": "always", "tag_selectors": [{"decoration": "matches",
            "pattern": "release-*"}]});
        let p = Policy {
            algorithm: "or".into(),
            rules: vec![rule(keep3.clone()), rule(always)],
            schedule: Some(" 0 0 0 * * * ".into()),
        }
        .normalized()
        .unwrap();
        assert_eq!(p.rules.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(p.rules[0].action, "retain");
        assert_eq!(p.schedule.as_deref(), Some("0 0 0 * * *"));
        let stored = p.to_stored().unwrap();
        assert!(!stored.contains("schedule"), "{stored}");
        let back = Policy::from_stored(&stored, p.schedule.as_deref()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.compiled().unwrap().len(), 2);
        assert!(Policy::default().normalized().unwrap().schedule.is_none());

        let bad = |p: Policy| match p.normalized() {
            Err(Error::Invalid(m)) => m,
            other => panic!("accepted: {other:?}"),
        };
        let one = |v: Value| Policy {
            rules: vec![rule(v)],
            ..Policy::default()
        };
        assert!(bad(Policy {
            algorithm: "and".into(),
            ..Policy::default()
        })
        .contains("or"));
        assert!(bad(one(json!({"template": "sometimes"}))).contains("rule 1"));
        assert!(bad(one(json!({"template": "always", "action": "delete"}))).contains("retain"));
        assert!(bad(one(json!({"template": "always", "tag_selectors":
            [{"decoration": "matches", "pattern": "[a-"}]})))
        .contains("pattern"));
        assert!(bad(Policy {
            rules: vec![rule(keep3.clone()); 2],
            ..Policy::default()
        })
        .contains("same as rule 1"));
        assert!(bad(Policy {
            rules: (0..16)
                .map(|i| rule(json!({"template": "latestPushedK",
                    "params": {"latestPushedK": i}})))
                .collect(),
            ..Policy::default()
        })
        .contains("at most 15"));
        assert!(bad(Policy {
            schedule: Some("every night".into()),
            ..Policy::default()
        })
        .contains("six fields"));
    }

    #[test]
    fn schedules_fire_at_their_times() {
        // 2024-01-01T00:00:00Z.
        let t = 1_704_067_200_000;
        assert_eq!(
            next_run("0 30 2 * * *", t),
            Some(t + 2 * 3_600_000 + 1_800_000)
        );
        assert_eq!(next_run("* * * * * *", t), Some(t + 1000));
        assert_eq!(next_run("not cron", t), None);
    }
}
