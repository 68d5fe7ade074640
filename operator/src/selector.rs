//! Label-selector matching, as the API server defines it, for deciding which watches select a
//! pod (webhook, controller, report endpoint).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("selector operator {0:?} is not one of In, NotIn, Exists, DoesNotExist")]
    UnknownOperator(String),
    #[error("selector operator {operator} on key {key:?} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("selector operator {operator} on key {key:?} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

/// Checks that every requirement of the selector is well formed, so a watch with a bad
/// selector is reported once instead of failing every match.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for requirement in selector.match_expressions.iter().flatten() {
        check_requirement(requirement)?;
    }
    Ok(())
}

/// Whether `labels` satisfy the selector. An empty selector selects everything, as in
/// Deployments and NetworkPolicies.
pub fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    if !labels_match {
        // Still validate, so a malformed selector never silently matches nothing.
        validate(selector)?;
        return Ok(false);
    }
    for requirement in selector.match_expressions.iter().flatten() {
        if !requirement_matches(requirement, labels)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn check_requirement(requirement: &LabelSelectorRequirement) -> Result<(), SelectorError> {
    let has_values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
    let operator = requirement.operator.as_str();
    let error_fields = || (requirement.key.clone(), operator.to_string());
    match operator {
        "In" | "NotIn" if !has_values => {
            let (key, operator) = error_fields();
            Err(SelectorError::MissingValues { key, operator })
        }
        "Exists" | "DoesNotExist" if has_values => {
            let (key, operator) = error_fields();
            Err(SelectorError::UnexpectedValues { key, operator })
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" => Ok(()),
        other => Err(SelectorError::UnknownOperator(other.to_string())),
    }
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    check_requirement(requirement)?;
    let value = labels.get(&requirement.key);
    let listed = |v: &String| requirement.values.iter().flatten().any(|w| w == v);
    Ok(match requirement.operator.as_str() {
        "In" => value.is_some_and(listed),
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        _ => value.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    #[test]
    fn empty_selector_selects_every_pod() {
        assert_eq!(matches(&LabelSelector::default(), &labels(&[])), Ok(true));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let web = selector(&[("app", "nginx"), ("tier", "web")], vec![]);
        assert_eq!(
            matches(
                &web,
                &labels(&[("app", "nginx"), ("tier", "web"), ("x", "y")])
            ),
            Ok(true)
        );
        assert_eq!(matches(&web, &labels(&[("app", "nginx")])), Ok(false));
        assert_eq!(
            matches(&web, &labels(&[("app", "nginx"), ("tier", "db")])),
            Ok(false)
        );
    }

    #[test]
    fn expressions_follow_the_api_semantics() {
        let pod = labels(&[("app", "nginx"), ("env", "prod")]);
        let cases = [
            (expression("env", "In", &["prod", "stage"]), true),
            (expression("env", "In", &["dev"]), false),
            (expression("env", "NotIn", &["dev"]), true),
            (expression("missing", "NotIn", &["dev"]), true),
            (expression("env", "NotIn", &["prod"]), false),
            (expression("app", "Exists", &[]), true),
            (expression("missing", "Exists", &[]), false),
            (expression("missing", "DoesNotExist", &[]), true),
            (expression("app", "DoesNotExist", &[]), false),
        ];
        for (requirement, expected) in cases {
            let description = format!("{requirement:?}");
            assert_eq!(
                matches(&selector(&[], vec![requirement]), &pod),
                Ok(expected),
                "{description}"
            );
        }
    }

    #[test]
    fn malformed_selectors_are_errors_not_silent_misses() {
        let pod = labels(&[("app", "nginx")]);
        let unknown = selector(&[], vec![expression("app", "Equals", &["nginx"])]);
        assert!(matches!(
            matches(&unknown, &pod),
            Err(SelectorError::UnknownOperator(_))
        ));
        let no_values = selector(&[("app", "other")], vec![expression("app", "In", &[])]);
        assert!(matches!(
            matches(&no_values, &pod),
            Err(SelectorError::MissingValues { .. })
        ));
        let extra_values = selector(&[], vec![expression("app", "Exists", &["x"])]);
        assert!(matches!(
            validate(&extra_values),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }
}
