//! Executing the real `sluice` binary exactly as a runtime does: `CNI_*` in the environment
//! (nothing else inherited), the configuration on stdin, the reply on stdout, run in the node
//! namespace (where the runtime lives).

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::ns::TestNs;

/// One invocation's environment.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Call {
    pub fn new(command: &str, container_id: &str, netns: &str) -> Self {
        Self {
            command: command.into(),
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"),
            path: "/opt/cni/bin".into(),
        }
    }

    pub fn with_args(mut self, args: &str) -> Self {
        self.args = args.into();
        self
    }

    pub fn with_ifname(mut self, ifname: &str) -> Self {
        self.ifname = ifname.into();
        self
    }
}

/// What the plugin did.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// The stdout JSON (panics when it is not JSON: stdout must carry only the reply).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code of a failure.
    pub fn code(&self) -> u64 {
        assert_ne!(self.status, 0, "expected a failure, got success: {}", self.stdout);
        self.json()["code"].as_u64().expect("error has a code")
    }

    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status, 0,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

/// Run the plugin with the raw environment pairs and stdin, in `node`'s namespace.
pub fn exec_raw(node: &TestNs, env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", node.path_str()))
        .arg(crate::bin("sluice"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait sluice");
    Output {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Run the plugin for `call` with `conf` on stdin.
pub fn exec(node: &TestNs, call: &Call, conf: &Value) -> Output {
    let mut env: Vec<(&str, &str)> = vec![
        ("CNI_COMMAND", &call.command),
        ("CNI_CONTAINERID", &call.container_id),
        ("CNI_IFNAME", &call.ifname),
        ("CNI_PATH", &call.path),
        ("CNI_ARGS", &call.args),
    ];
    if !call.netns.is_empty() {
        env.push(("CNI_NETNS", &call.netns));
    }
    exec_raw(node, &env, conf.to_string().as_bytes())
}

/// A pod: a namespace wired by an ADD through the plugin. Remembers its result.
pub struct Pod {
    pub ns: TestNs,
    pub container_id: String,
    pub result: Value,
}

impl Pod {
    /// The pod's first address of a family.
    pub fn ip(&self, v4: bool) -> std::net::IpAddr {
        self.result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .filter_map(|i| i["address"].as_str())
            .filter_map(|a| a.split('/').next()?.parse::<std::net::IpAddr>().ok())
            .find(|a| a.is_ipv4() == v4)
            .expect("pod has an address of that family")
    }

    pub fn ip4(&self) -> std::net::IpAddr {
        self.ip(true)
    }

    pub fn host_ifname(&self) -> String {
        sluice_api::host_ifname(&self.container_id, "eth0")
    }
}

/// ADD a new pod namespace through the plugin (panics on failure).
pub fn add_pod(node: &TestNs, conf: &Value, role: &str) -> Pod {
    add_pod_with(node, conf, role, |c| c)
}

pub fn add_pod_with(node: &TestNs, conf: &Value, role: &str, f: impl FnOnce(Call) -> Call) -> Pod {
    let ns = TestNs::new(role);
    let container_id = format!("{}-ctr", ns.name);
    let call = f(Call::new("ADD", &container_id, &ns.path_str()));
    let out = exec(node, &call, conf);
    let result = out.ok();
    Pod {
        ns,
        container_id,
        result,
    }
}

/// DEL a pod (with its netns still there).
pub fn del_pod(node: &TestNs, conf: &Value, pod: &Pod) -> Output {
    exec(
        node,
        &Call::new("DEL", &pod.container_id, &pod.ns.path_str()),
        conf,
    )
}
