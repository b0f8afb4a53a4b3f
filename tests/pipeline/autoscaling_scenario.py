"""One autoscaling scenario, run as its own process by ``test_autoscaling.py``:

1. start a head with **no CPUs** and Ray's fake multi-node autoscaler (worker nodes are local raylets the
   autoscaler starts and stops like cloud VMs), on its own port, token auth off;
2. run the job against it with ``ray_autoscaling=true``: its resource requests make the autoscaler add nodes;
3. watch the nodes (a zero-CPU driver polling ``ray.nodes()``) during the job and until the idle ones are
   released;
4. stop everything it started: this process is a child subreaper, so the cluster's daemons (which ``ray
   start`` detaches) stay its descendants and are killed here, never with a machine-wide ``ray stop``.

Prints one JSON line: job exit code, the most worker nodes alive at once, seconds until they were all
released after the job, and the job's output tail.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
PORT = 6391
WORKER = {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2}


def cluster_config() -> dict:
    return {
        "cluster_name": "eapo-fake-autoscaling", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{PORT}"},
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                                 "cpu_worker": WORKER},
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    }


def _kill_descendants() -> None:
    me = os.getpid()
    for _ in range(3):
        children = subprocess.run(["pgrep", "-P", str(me)], capture_output=True, text=True).stdout.split()
        for pid in children:
            subprocess.run(["pkill", "-9", "-P", pid], capture_output=True)
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        time.sleep(1)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _forget_address() -> None:
    """`ray start` wrote this cluster's address to /tmp/ray/ray_current_cluster, where a later ``ray.init()``
    without an address would look for a cluster to join: remove it (``ray stop`` would, machine-wide)."""
    path = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(path) as f:
            if f.read().strip().endswith(f":{PORT}"):
                os.remove(path)
    except OSError:
        pass


def worker_nodes() -> int:
    """Alive worker nodes (nodes with CPUs: the head has none)."""
    import ray

    return len([n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0])


def main(run_dir: str, repo: str, overrides: list[str]) -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "disabled",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    os.environ.update({k: env[k] for k in ("RAY_AUTH_MODE", "PATH")})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cluster_config(), f)
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    result = {}
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={PORT}", "--num-cpus=0", f"--autoscaling-config={f.name}",
                        "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True, capture_output=True,
                       timeout=120)
        import ray

        ray.init(address=f"127.0.0.1:{PORT}", log_to_driver=False)  # a zero-CPU observer
        log = open(os.path.join(os.path.dirname(run_dir), "job.log"), "w")
        job = subprocess.Popen([sys.executable, "-m", "pipeline.run", f"run_dir={run_dir}",
                                f"ray_address=127.0.0.1:{PORT}", "ray_autoscaling=true", *overrides],
                               cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        counts, started = [], time.time()
        while job.poll() is None and time.time() - started < 1200:
            counts.append(worker_nodes())
            time.sleep(1.0)
        ended, released = time.time(), None
        while time.time() - ended < 180:
            if worker_nodes() == 0:
                released = time.time() - ended
                break
            time.sleep(1.0)
        log.close()
        result = {"job_rc": job.poll(), "max_workers": max(counts, default=0), "first_counts": counts[:3],
                  "released_after_s": released,
                  "output": open(os.path.join(os.path.dirname(run_dir), "job.log")).read()[-6000:]}
    finally:
        _kill_descendants()
        _forget_address()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
