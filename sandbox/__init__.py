"""Docker sandboxes: one hardened container per task.

    container    a task's sandbox: its commands (`Sandbox.exec`, `ExecResult`) and its files
    manager      `Sandboxes`: a container per task, a warm pool, reaping what is left over
    limits       what a sandbox may use (`SandboxLimits`), and the operator's bounds on it
    egress       the way out of a "proxy" sandbox: its own network and a forwarder to the proxy
    proxy        the egress proxy on the host, judging each request against a task's allowlist
    image        building the runtime image (`agent sandbox build`) from `sandbox/image/`

Machinery: `_docker` (the connection, and Docker's errors mapped once), `_hardening` (the
settings every container gets), `_claim` (claiming a pooled container), `_addresses` (which
addresses the proxy may dial), `_records` (what agent-exec leaves of each command), `_output`
(capturing what a command prints) and `_problems` (the limit a command ran into, said plainly).
Deployments (`deploy`, `deploy_docker`) have their own: `_recipes`, `_services`, `_deploy_view`,
and `_service_egress` with `_egress_main` (a deployed service's egress proxy, in a container).
"""
