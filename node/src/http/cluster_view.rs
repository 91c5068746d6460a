//! The body of `GET /v1/cluster`.

use serde::Serialize;
use serde_json::Value;

use crate::NodeId;
use crate::placement::Layout;
use crate::raft::host::GroupView;

/// `/v1/cluster`'s body, serialised as it stands rather than through a `serde_json::Value`,
/// whose maps order keys as strings: the layout's groups come in numeric order ("2" before
/// "10"). Fields are in alphabetical order, as the `Value` this replaced had them.
#[derive(Debug, Serialize)]
pub(super) struct ClusterBody<'a> {
    /// The placement layout (version and each group's voters), once meta state has it.
    pub layout: Option<Layout>,
    /// Members as the failure detector sees them, with `dead` from meta state.
    pub members: Vec<Value>,
    /// The meta group's row.
    pub meta: Value,
    /// The answering node.
    pub node_id: NodeId,
    /// Every partition of the layout, by id.
    pub partitions: Vec<&'a GroupView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_groups_are_in_numeric_order() {
        let layout = Layout { version: 3, groups: (0..=12).map(|g| (g, vec![1, 2, 3])).collect() };
        let body =
            ClusterBody { layout: Some(layout), members: vec![], meta: Value::Null, node_id: 1, partitions: vec![] };
        let text = serde_json::to_string(&body).expect("serialises");
        let groups = text.split(r#""groups":{"#).nth(1).and_then(|s| s.split('}').next()).expect("groups");
        let keys: Vec<&str> = groups.split("],").filter_map(|kv| kv.split('"').nth(1)).collect();
        let numeric: Vec<String> = (0..=12).map(|g: u64| g.to_string()).collect();
        assert_eq!(keys, numeric, "{text}");
        // The shape is unchanged: the layout is still an object keyed by group id.
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["layout"]["groups"]["10"], serde_json::json!([1, 2, 3]));
        assert_eq!(v["layout"]["version"], 3);
    }
}
