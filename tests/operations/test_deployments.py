"""prefect.yaml: every entrypoint imports, every deployment's parameters fit its flow."""

import importlib

import pytest
import yaml

from cli.server import POOLS
from schemas.config import PROJECT_ROOT, load_config
from schemas.stages import ORDER, PIPELINE, STAGES

SPEC = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = SPEC["deployments"]


def load_flow(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_parameters_validate(deployment):
    flow = load_flow(deployment["entrypoint"])
    assert deployment["enforce_parameter_schema"] is True
    asked = {"target": "data/raw/qa.jsonl"} if deployment["name"] == "lineage" else {}  # given per run
    params = flow.validate_parameters(deployment["parameters"] | asked)
    if "config" in params:
        load_config(params["config"], params["overrides"])


def test_every_stage_and_the_pipeline_are_deployed_on_the_right_pool():
    by_name = {d["name"]: d for d in DEPLOYMENTS}
    assert set(ORDER) | {"pipeline"} <= set(by_name)
    for stage in ORDER:
        assert by_name[stage]["work_pool"]["name"] == STAGES[stage].pool


def test_scheduled_refresh_ships_inactive():
    scheduled = [d for d in DEPLOYMENTS if d.get("schedules")]
    assert scheduled and all(not s["active"] for d in scheduled for s in d["schedules"])


EXAMPLES = SPEC["definitions"]["examples"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_example_deployments_fit_their_flow_and_stay_out_of_deploy_all(example):
    """Examples (Kubernetes pool) validate like real ones, but `prefect deploy --all` must not
    see them: their pool is not one `lmpipe setup-server` creates, so deploying would fail."""
    test_deployment_parameters_validate(example)
    assert example["name"] not in {d["name"] for d in DEPLOYMENTS}
    assert example["work_pool"]["name"] not in POOLS


def test_the_pipeline_chains_the_stages_of_PIPELINE_in_order():
    """flows/pipeline.py names its stage flows in order; it must match the plan's order."""
    from flows.pipeline import CHAIN, STAGE_FLOWS

    assert [f.name for f in CHAIN] == list(PIPELINE)
    assert set(STAGE_FLOWS) == set(ORDER)


def test_the_pools_heartbeat_is_what_the_crash_automation_counts_on():
    from cli.server import HEARTBEAT_S, default_within_s

    pools = SPEC["definitions"]
    for pool in ("cpu", "gpu"):
        assert pools[pool]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)
    assert default_within_s() <= 120  # Crashed within 2 minutes of the last beat


def test_the_run_form_explains_every_parameter_and_refuses_an_unknown_override_key():
    from prefect.utilities.callables import parameter_schema

    for spec in DEPLOYMENTS:
        flow = load_flow(spec["entrypoint"])
        props = parameter_schema(flow).model_dump()["properties"]
        assert all(p.get("description") for p in props.values()), spec["name"]
    sft = load_flow("flows/sft.py:sft_flow")
    assert sft.validate_parameters({"overrides": ["sft.lr=0.0001", "pretrain.model.hidden_size=64"]})
    with pytest.raises(Exception, match=r"overrides\.0: String should match pattern"):
        sft.validate_parameters({"overrides": ["sft.lrr=0.0001"]})
