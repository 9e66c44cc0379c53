"""Stand-ins for sbatch, srun, gcloud and python, so tests run what tsasr.launch prints.

tests/test_launch.py puts wrappers named `sbatch`, `srun`, `gcloud` (and, to record an
argv instead of running it, `python`) first on the PATH; each runs `fake_cluster.py NAME
ARGS...`. They imitate only what the printed commands use:

- `sbatch [--parsable] SCRIPT` reads the #SBATCH lines as sbatch does (whitespace ends a
  value, double quotes group, backslash escapes), gives the job the variables sbatch gives
  (SLURM_JOB_ID from FAKE_SLURM_JOB_ID, SLURM_JOB_NAME, SLURM_NNODES, SLURM_JOB_NODELIST of
  127.0.0.1), runs the script with bash into the --output file (%x %j %A %a %% expanded)
  and prints the job id. Unlike sbatch it returns when the job has finished.
- `srun CMD...` starts SLURM_NNODES copies of CMD (--ntasks-per-node=1), each with the
  variables jax.distributed.initialize() reads under SLURM (jax/_src/clusters/
  slurm_cluster.py): SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
  SLURM_LOCALID, SLURM_STEP_NUM_NODES. The coordinator is the first node, on port
  61440 + SLURM_JOB_ID % 4096.
- `gcloud compute tpus tpu-vm {create,scp,ssh,delete}`: a pod of FAKE_TPU_WORKERS workers,
  worker i's home FAKE_TPU_HOME/worker<i>; ssh runs `bash -c COMMAND` in the chosen workers'
  homes at once. A real worker's jax.distributed.initialize() asks the TPU metadata server
  for the coordinator and its process id; here, with FAKE_TPU_COORDINATOR=host:port, the
  runner's command line gets them explicitly (--coordinator, --num_processes, --process_id).
- `python ARGS...` (recording) writes {argv, cwd, ...} as JSON to WORKDIR/results.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys


def sbatch(args: list[str]) -> int:
    script = pathlib.Path(args[-1])
    options = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH"):
            key, _, value = shlex.split(line[len("#SBATCH") :])[0].partition("=")
            options[key] = value
    job_id, name = os.environ.get("FAKE_SLURM_JOB_ID", "4242"), options.get("--job-name", script.name)
    output = options.get("--output", f"slurm-{job_id}.out")
    for pattern, value in (("%%", "\0"), ("%x", name), ("%j", job_id), ("%A", job_id), ("%a", "4294967294")):
        output = output.replace(pattern, value)
    env = dict(
        os.environ,
        SLURM_JOB_ID=job_id,
        SLURM_JOB_NAME=name,
        SLURM_NNODES=options.get("--nodes", "1"),
        SLURM_JOB_NODELIST="127.0.0.1",
    )
    with open(output.replace("\0", "%"), "w") as log:
        done = subprocess.run(["bash", str(script)], check=False, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(job_id if "--parsable" in args else f"Submitted batch job {job_id}")
    return done.returncode


def srun(args: list[str]) -> int:
    nodes = int(os.environ["SLURM_NNODES"])
    step = {"SLURM_STEP_NODELIST": os.environ["SLURM_JOB_NODELIST"], "SLURM_NTASKS": str(nodes)}
    step |= {"SLURM_STEP_NUM_NODES": str(nodes), "SLURM_LOCALID": "0"}
    tasks = [
        subprocess.Popen(args, env=dict(os.environ, **step, SLURM_PROCID=str(i), SLURM_NODEID=str(i)))
        for i in range(nodes)
    ]
    return next((code for code in (t.wait() for t in tasks) if code), 0)


def gcloud(args: list[str]) -> int:
    assert args[:3] == ["compute", "tpus", "tpu-vm"], args
    verb, flags, positional = args[3], {}, []
    for arg in args[4:]:
        if arg.startswith("--"):
            key, _, value = arg.partition("=")
            flags[key] = value
        else:
            positional.append(arg)
    root, count = pathlib.Path(os.environ["FAKE_TPU_HOME"]), int(os.environ.get("FAKE_TPU_WORKERS", "1"))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "calls.jsonl", "a") as f:
        f.write(json.dumps([verb, positional, flags]) + "\n")
    worker = flags.get("--worker", "0")
    workers = range(count) if worker == "all" else [int(worker)]
    home = [root / f"worker{i}" for i in range(count)]
    if verb == "create":
        for h in home:
            h.mkdir(parents=True, exist_ok=True)
    elif verb == "scp":
        *sources, dest = positional

        def on(h: pathlib.Path, spec: str) -> pathlib.Path:  # NAME:path, relative to the home
            return h / spec.partition(":")[2]

        for i in workers:
            for source in sources:
                src = on(home[i], source) if ":" in source else pathlib.Path(source)
                dst = on(home[i], dest) if ":" in dest else pathlib.Path(dest)
                (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    elif verb == "ssh":
        coordinator, command = os.environ.get("FAKE_TPU_COORDINATOR"), flags["--command"]
        procs = []
        for i in workers:
            if coordinator and " -m tsasr.run " in command:  # what the metadata server tells a real worker
                command_i = f"{command} --coordinator {coordinator} --num_processes {count} --process_id {i}"
            else:
                command_i = command
            env = dict(os.environ, HOME=str(home[i]))
            procs.append(subprocess.Popen(["bash", "-c", command_i], cwd=home[i], env=env))
        return next((code for code in (p.wait() for p in procs) if code), 0)
    return 0


def record(args: list[str]) -> int:
    workdir = pathlib.Path(args[args.index("--workdir") + 1])
    workdir.mkdir(parents=True, exist_ok=True)
    seen = {"argv": args, "cwd": os.getcwd(), "experiment_here": os.path.isfile(args[2])}
    seen["env"] = {k: os.environ.get(k) for k in ("TSASR_SETUP", "JAX_LOCAL_DEVICE_IDS", "SLURM_PROCID")}
    (workdir / f"results.json.{os.getpid()}").write_text(json.dumps(seen))
    os.replace(workdir / f"results.json.{os.getpid()}", workdir / "results.json")  # workers write at once
    return 0


if __name__ == "__main__":
    sys.exit({"sbatch": sbatch, "srun": srun, "gcloud": gcloud, "python": record}[sys.argv[1]](sys.argv[2:]))
