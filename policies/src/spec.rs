//! Per-resource configuration and state of a container: bounds, the limit in
//! force, and the `upper`/`lower` thresholds placed around it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resource::{MAX_AMOUNT, Resource};

/// What the `boundary` percentage is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundaryType {
    /// `margin = max * boundary / 100` (the original's `percentage_of_max`).
    #[default]
    #[serde(alias = "percentage_of_max")]
    PercentOfMax,
    /// `margin = current * boundary / 100` (the original's `percentage_of_current`).
    #[serde(alias = "percentage_of_current")]
    PercentOfCurrent,
}

/// Error from building or changing a [`ResourceSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `min` is greater than `max`.
    #[error("min {min} is greater than max {max}")]
    MinAboveMax {
        /// The lower bound given.
        min: u64,
        /// The upper bound given.
        max: u64,
    },
    /// `current` lies outside `[min, max]`.
    #[error("current {current} is outside [min {min}, max {max}]")]
    CurrentOutOfRange {
        /// The limit given.
        current: u64,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
    /// `boundary` is not a percentage.
    #[error("boundary {0} is not a percentage in 0..=100")]
    BoundaryOutOfRange(u8),
    /// A value is too large to compute with safely.
    #[error("{field} {value} exceeds the largest supported amount {MAX_AMOUNT}")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: u64,
    },
}

/// Bounds and state of one resource of one container. Built with
/// [`ResourceSpec::try_new`], which checks `min <= current <= max`,
/// `boundary <= 100` and that no value exceeds [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct ResourceSpec {
    min: u64,
    max: u64,
    current: u64,
    guard: bool,
    boundary: u8,
    boundary_type: BoundaryType,
}

/// Unvalidated form of [`ResourceSpec`], for (de)serialisation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Lower bound.
    pub min: u64,
    /// Upper bound.
    pub max: u64,
    /// Limit in force.
    pub current: u64,
    /// Scale this resource or not (default: true).
    #[serde(default = "yes")]
    pub guard: bool,
    /// Percentage placing `upper`/`lower` (default 10).
    #[serde(default = "ten")]
    pub boundary: u8,
    /// What `boundary` is a percentage of (default: of max).
    #[serde(default)]
    pub boundary_type: BoundaryType,
}

fn yes() -> bool {
    true
}

fn ten() -> u8 {
    10
}

impl TryFrom<RawSpec> for ResourceSpec {
    type Error = SpecError;

    fn try_from(raw: RawSpec) -> Result<Self, Self::Error> {
        let spec = ResourceSpec::try_new(raw.min, raw.max, raw.current, raw.boundary, raw.boundary_type)?;
        Ok(spec.with_guard(raw.guard))
    }
}

impl From<ResourceSpec> for RawSpec {
    fn from(s: ResourceSpec) -> Self {
        RawSpec {
            min: s.min,
            max: s.max,
            current: s.current,
            guard: s.guard,
            boundary: s.boundary,
            boundary_type: s.boundary_type,
        }
    }
}

impl ResourceSpec {
    /// A guarded resource with the given bounds, limit in force and boundary.
    pub fn try_new(
        min: u64,
        max: u64,
        current: u64,
        boundary: u8,
        boundary_type: BoundaryType,
    ) -> Result<Self, SpecError> {
        for (field, value) in [("min", min), ("max", max), ("current", current)] {
            if value > MAX_AMOUNT {
                return Err(SpecError::TooLarge { field, value });
            }
        }
        if min > max {
            return Err(SpecError::MinAboveMax { min, max });
        }
        if current < min || current > max {
            return Err(SpecError::CurrentOutOfRange { current, min, max });
        }
        if boundary > 100 {
            return Err(SpecError::BoundaryOutOfRange(boundary));
        }
        Ok(ResourceSpec { min, max, current, guard: true, boundary, boundary_type })
    }

    /// The same spec with `guard` set.
    pub fn with_guard(mut self, guard: bool) -> Self {
        self.guard = guard;
        self
    }

    /// The same spec with another limit in force.
    pub fn with_current(mut self, current: u64) -> Result<Self, SpecError> {
        self.set_current(current)?;
        Ok(self)
    }

    /// Record the limit in force; it must lie within `[min, max]`.
    pub fn set_current(&mut self, current: u64) -> Result<(), SpecError> {
        if current < self.min || current > self.max {
            return Err(SpecError::CurrentOutOfRange { current, min: self.min, max: self.max });
        }
        self.current = current;
        Ok(())
    }

    /// Lower bound.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Upper bound.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Limit in force.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Whether the resource is scaled.
    pub fn guard(&self) -> bool {
        self.guard
    }

    /// Boundary percentage.
    pub fn boundary(&self) -> u8 {
        self.boundary
    }

    /// What the boundary is a percentage of.
    pub fn boundary_type(&self) -> BoundaryType {
        self.boundary_type
    }

    /// `value` clamped into `[min, max]`.
    pub fn clamp(&self, value: u64) -> u64 {
        value.clamp(self.min, self.max)
    }

    /// The original's margin: `max(trunc(base * boundary / 100), 1)` where
    /// base is `max` or `current` according to the boundary type.
    pub fn margin(&self) -> u64 {
        let base = match self.boundary_type {
            BoundaryType::PercentOfMax => self.max,
            BoundaryType::PercentOfCurrent => self.current,
        };
        (base * u64::from(self.boundary) / 100).max(1)
    }

    /// The thresholds that follow `current` exactly.
    pub fn limits(&self) -> Limits {
        Limits::follow(self)
    }
}

/// The `upper` and `lower` thresholds of a resource. Signed: nothing forces
/// `lower >= min`, and with a large margin `lower` (even `upper`) can fall
/// below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Usage above this makes an *up* event.
    pub upper: i64,
    /// Usage below this makes a *down* event.
    pub lower: i64,
}

impl Limits {
    /// `upper = current - margin`, `lower = upper - margin`.
    pub fn follow(spec: &ResourceSpec) -> Limits {
        let margin = as_i64(spec.margin());
        let upper = as_i64(spec.current()) - margin;
        Limits { upper, lower: upper - margin }
    }

    /// The original's consistency check: `upper == current - margin`.
    pub fn is_consistent(&self, spec: &ResourceSpec) -> bool {
        self.upper == as_i64(spec.current()) - as_i64(spec.margin())
    }
}

/// Values are bounded by [`MAX_AMOUNT`], so this never saturates in practice.
pub(crate) fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The specs of one container, by resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceSpecs(BTreeMap<Resource, ResourceSpec>);

impl ResourceSpecs {
    /// No resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the spec of a resource, returning the one it replaces.
    pub fn insert(&mut self, resource: Resource, spec: ResourceSpec) -> Option<ResourceSpec> {
        self.0.insert(resource, spec)
    }

    /// The spec of a resource.
    pub fn get(&self, resource: Resource) -> Option<&ResourceSpec> {
        self.0.get(&resource)
    }

    /// The spec of a resource, mutably.
    pub fn get_mut(&mut self, resource: Resource) -> Option<&mut ResourceSpec> {
        self.0.get_mut(&resource)
    }

    /// All specs in resource order.
    pub fn iter(&self) -> impl Iterator<Item = (Resource, &ResourceSpec)> {
        self.0.iter().map(|(r, s)| (*r, s))
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no resource is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(Resource, ResourceSpec)> for ResourceSpecs {
    fn from_iter<T: IntoIterator<Item = (Resource, ResourceSpec)>>(iter: T) -> Self {
        ResourceSpecs(iter.into_iter().collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(min: u64, max: u64, current: u64, boundary: u8) -> ResourceSpec {
        ResourceSpec::try_new(min, max, current, boundary, BoundaryType::PercentOfMax).unwrap()
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let e = ResourceSpec::try_new(10, 5, 7, 10, BoundaryType::PercentOfMax).unwrap_err();
        assert_eq!(e, SpecError::MinAboveMax { min: 10, max: 5 });
        let e = ResourceSpec::try_new(1, 5, 7, 10, BoundaryType::PercentOfMax).unwrap_err();
        assert!(matches!(e, SpecError::CurrentOutOfRange { current: 7, .. }));
        let e = ResourceSpec::try_new(1, 5, 3, 101, BoundaryType::PercentOfMax).unwrap_err();
        assert_eq!(e, SpecError::BoundaryOutOfRange(101));
        let e = ResourceSpec::try_new(1, u64::MAX, 3, 1, BoundaryType::PercentOfMax).unwrap_err();
        assert!(matches!(e, SpecError::TooLarge { field: "max", .. }));
        assert!(spec(1, 10, 5, 10).with_current(11).is_err());
    }

    #[test]
    fn margin_is_truncated_and_at_least_one() {
        // 4000 millicores max, boundary 10 % -> 400.
        assert_eq!(spec(0, 4000, 2000, 10).margin(), 400);
        // trunc(15 * 10 / 100) = 1.
        assert_eq!(spec(0, 15, 10, 10).margin(), 1);
        // trunc(9 * 10 / 100) = 0 -> 1.
        assert_eq!(spec(0, 9, 5, 10).margin(), 1);
        let of_current = ResourceSpec::try_new(0, 4000, 1999, 10, BoundaryType::PercentOfCurrent).unwrap();
        assert_eq!(of_current.margin(), 199);
    }

    #[test]
    fn limits_follow_current_and_may_go_below_min() {
        let s = spec(1000, 4000, 1200, 25);
        let l = s.limits();
        assert_eq!(l.upper, 200);
        assert_eq!(l.lower, -800);
        assert!(l.is_consistent(&s));
        let moved = s.with_current(2000).unwrap();
        assert!(!l.is_consistent(&moved));
    }

    #[test]
    fn serde_validates() {
        let ok: ResourceSpec = serde_json::from_str(r#"{"min":1,"max":10,"current":5,"boundary":20}"#).unwrap();
        assert_eq!(ok.margin(), 2);
        assert!(ok.guard());
        let bad = serde_json::from_str::<ResourceSpec>(r#"{"min":11,"max":10,"current":5}"#);
        assert!(bad.unwrap_err().to_string().contains("min 11 is greater than max 10"));
        let alias: ResourceSpec =
            serde_json::from_str(r#"{"min":1,"max":10,"current":5,"boundary_type":"percentage_of_current"}"#).unwrap();
        assert_eq!(alias.boundary_type(), BoundaryType::PercentOfCurrent);
    }
}
