//! A CRM emulator (`driftless emulate KIND`, which runs the `driftless-emulate` binary built
//! next to `driftless`) as a child process on a free loopback port
//! ([`Emulator`]), and its test-control API (`/_emulator/...`). Everything about how the
//! process is spawned is in [`Emulator::start`].

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{free_port, http, wait_for_port};

/// A running emulator; killed on drop.
pub(crate) struct Emulator {
    child: Child,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
}

impl Emulator {
    /// Starts the emulator of `kind` (`hubspot`, `zoho`, `webhook`) and waits until it accepts
    /// connections.
    pub(crate) fn start(kind: &str) -> Emulator {
        Self::start_on(kind, free_port())
    }

    /// [`Emulator::start`] on `port` (a CRM that comes up where a sink already looks for it).
    pub(crate) fn start_on(kind: &str, port: u16) -> Emulator {
        let driftless = std::path::Path::new(env!("CARGO_BIN_EXE_driftless"));
        let emulate = driftless.with_file_name("driftless-emulate");
        assert!(
            emulate.is_file(),
            "{} is missing: build it first with `cargo build -p driftless-emulators` \
             (scripts/test does)",
            emulate.display()
        );
        let child = Command::new(driftless)
            .args(["emulate", kind, "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "the emulator");
        Emulator { child, port }
    }

    /// The URL of `path` on the emulator.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /_emulator/state`.
    pub(crate) async fn state(&self) -> Value {
        self.get("/_emulator/state").await
    }

    /// GETs a path of the emulator; returns its JSON answer.
    pub(crate) async fn get(&self, path: &str) -> Value {
        http()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs JSON to a path of the emulator; returns the status and the JSON answer (Null when
    /// empty).
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = http().post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
