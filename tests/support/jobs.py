"""A job API of the kind a poll step is for: POST /jobs starts a job, GET /jobs/<id> says how it goes.

A job is done once it has been asked about `polls_needed` times; GET /jobs/<id>/asked lists when it
was asked (seconds since the epoch), so a test can see the intervals without timing anything itself.
"""

from __future__ import annotations

import itertools
import threading
import time

from flask import Flask, jsonify, request


def job_service() -> Flask:
    app = Flask("jobs")
    jobs: dict[str, dict] = {}
    lock = threading.Lock()
    numbers = itertools.count(1)

    @app.post("/jobs")
    def start():
        body = request.get_json()
        with lock:
            job_id = f"job-{next(numbers)}"
            jobs[job_id] = {"work": body["work"], "needed": int(body.get("polls_needed", 3)), "asked": []}
        return jsonify(job_id=job_id), 201

    @app.get("/jobs/<job_id>")
    def status(job_id):
        with lock:
            job = jobs.get(job_id)
            if job is None:
                return jsonify(error=f"no job {job_id}"), 404
            job["asked"].append(time.time())
            if len(job["asked"]) < job["needed"]:
                return jsonify(state="running", progress=len(job["asked"]) / job["needed"])
            return jsonify(state="done", progress=1.0, result=job["work"].upper())

    @app.get("/jobs/<job_id>/asked")
    def asked(job_id):
        with lock:
            return jsonify(list(jobs[job_id]["asked"]))

    return app
