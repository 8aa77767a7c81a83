//! Label selectors (`matchLabels` AND `matchExpressions`), as the compiler uses them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::model::Labels;

/// Does `sel` select an object with `labels`? `matchLabels` and every expression must hold;
/// an empty selector selects everything. `NotIn` and `DoesNotExist` hold for objects that lack
/// the key. Requirements the API server would reject (`In`/`NotIn` without values,
/// `Exists`/`DoesNotExist` with values, unknown operators) select nothing: a malformed
/// manifest never selects more than it says.
pub fn matches(sel: &LabelSelector, labels: &Labels) -> bool {
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let Some(exprs) = &sel.match_expressions else {
        return true;
    };
    exprs.iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => !values.is_empty() && value.is_some_and(|v| values.contains(v)),
            "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
            "Exists" => values.is_empty() && value.is_some(),
            "DoesNotExist" => values.is_empty() && value.is_none(),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(matches(&sel(json!({})), &l));
        assert!(matches(&sel(json!({"matchLabels": {"app": "web"}})), &l));
        assert!(!matches(&sel(json!({"matchLabels": {"app": "db"}})), &l));
        let e = |op: &str, vals: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": "app", "operator": op, "values": vals}]}))
        };
        assert!(matches(&e("In", json!(["web", "x"])), &l));
        assert!(!matches(&e("In", json!([])), &l));
        assert!(!matches(&e("NotIn", json!(["web"])), &l));
        assert!(
            matches(&e("NotIn", json!(["web"])), &labels(&[])),
            "NotIn holds without the key"
        );
        assert!(matches(&e("Exists", json!(null)), &l));
        assert!(!matches(&e("DoesNotExist", json!(null)), &l));
        assert!(matches(&e("DoesNotExist", json!(null)), &labels(&[])));
        assert!(!matches(&e("Bogus", json!(["web"])), &l));
        // matchLabels AND matchExpressions.
        let both = sel(
            json!({"matchLabels": {"tier": "front"}, "matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}),
        );
        assert!(!matches(&both, &l));
    }
}
