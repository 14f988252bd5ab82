"""Argo CD applications and the GitHub Actions workflows: which environment follows what, and
which workflow moves which overlay's image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.ops.conftest import REPO, load_yaml

REPO_URL = "https://github.com/example-org/school-payments.git"


def workflow(name: str) -> dict:
    data = load_yaml(f".github/workflows/{name}")
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_text(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


# --- Argo CD ------------------------------------------------------------------------------------------


def test_dev_application_tracks_the_dev_branch_automatically():
    app = load_yaml("argocd/dev.yaml")
    assert app["kind"] == "Application"
    assert app["spec"]["source"] == {"repoURL": REPO_URL, "targetRevision": "dev", "path": "k8s/overlays/dev"}
    assert app["spec"]["destination"]["namespace"] == "school-payments-dev"
    assert app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_staging_application_set_tracks_release_branches():
    appset = load_yaml("argocd/staging.yaml")
    assert appset["kind"] == "ApplicationSet"
    (generator,) = appset["spec"]["generators"]
    scm = generator["scmProvider"]
    assert scm["github"]["allBranches"] is True
    (filters,) = scm["filters"]
    branch_match = re.compile(filters["branchMatch"])
    assert branch_match.search("release/1.4") and branch_match.search("release/2026-11")
    assert not any(branch_match.search(b) for b in ("dev", "main", "feature/release/x", "releases/1"))
    assert re.search(filters["repositoryMatch"], "school-payments")
    template = appset["spec"]["template"]["spec"]
    assert template["source"] == {"repoURL": REPO_URL, "targetRevision": "{{ .branch }}", "path": "k8s/overlays/staging"}
    assert template["destination"]["namespace"] == "school-payments-staging"
    # Closing an old release branch must not delete what the next one takes over.
    assert appset["spec"]["syncPolicy"]["preserveResourcesOnDeletion"] is True
    assert "{{ .branchNormalized }}" in appset["spec"]["template"]["metadata"]["name"]


def test_prod_application_is_a_semver_tag_synced_by_hand():
    app = load_yaml("argocd/prod.yaml")
    source = app["spec"]["source"]
    assert source["repoURL"] == REPO_URL and source["path"] == "k8s/overlays/prod"
    assert re.fullmatch(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", source["targetRevision"])
    assert app["spec"]["destination"]["namespace"] == "school-payments"
    assert "automated" not in app["spec"].get("syncPolicy", {})


def test_every_application_belongs_to_the_project_and_its_destinations():
    project = load_yaml("argocd/project.yaml")
    allowed = {d["namespace"] for d in project["spec"]["destinations"]}
    assert REPO_URL in project["spec"]["sourceRepos"]
    specs = [load_yaml("argocd/dev.yaml")["spec"], load_yaml("argocd/prod.yaml")["spec"], load_yaml("argocd/staging.yaml")["spec"]["template"]["spec"]]
    for spec in specs:
        assert spec["project"] == project["metadata"]["name"]
        assert spec["destination"]["namespace"] in allowed
        assert (REPO / spec["source"]["path"] / "kustomization.yaml").is_file()


def test_overlay_namespaces_match_the_applications():
    for app_file, overlay in (("dev.yaml", "dev"), ("prod.yaml", "prod")):
        app = load_yaml(f"argocd/{app_file}")
        kustomization = load_yaml(f"k8s/overlays/{overlay}/kustomization.yaml")
        assert kustomization["namespace"] == app["spec"]["destination"]["namespace"]
    staging = load_yaml("argocd/staging.yaml")["spec"]["template"]["spec"]["destination"]["namespace"]
    assert load_yaml("k8s/overlays/staging/kustomization.yaml")["namespace"] == staging


# --- GitHub Actions ----------------------------------------------------------------------------


def test_ci_workflow_runs_make_test_against_postgres_and_redis():
    ci = workflow("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    job = ci["jobs"]["test"]
    assert set(job["services"]) == {"postgres", "redis"}
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert job["services"]["redis"]["image"].startswith("redis:")
    assert "5432:5432" in job["services"]["postgres"]["ports"] and "6379:6379" in job["services"]["redis"]["ports"]
    assert job["services"]["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"  # user postgres, like .ci/run
    assert re.search(r"^make test TEST_DATABASE_URL=postgres://postgres@127\.0\.0\.1:5432/\S+ TEST_REDIS_URL=redis://127\.0\.0\.1:6379/\d+$", run_text(job), re.M)
    setup_python = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python"))
    assert setup_python["with"]["python-version-file"] == ".python-version"


def test_deploy_workflow_tests_builds_pushes_and_updates_the_right_overlay():
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["dev", "release/**"]
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["image"]["needs"] == "test" and jobs["manifests"]["needs"] == "image"
    build = next(step for step in jobs["image"]["steps"] if step.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["push"] is True
    assert build["with"]["tags"] == "${{ env.IMAGE }}:${{ steps.tag.outputs.tag }}"
    assert jobs["image"]["permissions"]["packages"] == "write"
    # The branch -> (tag, overlay) table of the tag step.
    tag_script = run_text(jobs["image"])
    assert re.search(r'dev\) echo "tag=dev-\$\{short_sha\}".*echo "overlay=dev"', tag_script)
    assert re.search(r'release/\*\) echo "tag=rc-\$\{short_sha\}".*echo "overlay=staging"', tag_script)
    manifests = run_text(jobs["manifests"])
    assert 'cd "k8s/overlays/${OVERLAY}"' in manifests
    assert 'kustomize edit set image "school-payments=${IMAGE}:${TAG}"' in manifests
    assert 'git push origin "HEAD:${GITHUB_REF_NAME}"' in manifests
    assert jobs["manifests"]["permissions"]["contents"] == "write"


def test_overlay_tags_follow_the_workflow_conventions():
    """The tags the workflows write are the tags the overlays are checked for."""
    from tests.ops.test_kustomize import EXPECTED

    assert EXPECTED["dev"]["tag"].fullmatch("dev-abc1234")
    assert EXPECTED["staging"]["tag"].fullmatch("rc-abc1234")
    assert EXPECTED["prod"]["tag"].fullmatch("1.4.2") and not EXPECTED["prod"]["tag"].fullmatch("v1.4.2")


def test_promote_workflow_retags_the_staging_image_for_prod_and_tags_the_release():
    promote = workflow("promote.yml")
    assert promote["on"]["workflow_dispatch"]["inputs"]["version"]["required"] is True
    script = run_text(promote["jobs"]["promote"])
    assert "kustomize build k8s/overlays/staging" in script
    assert 'docker buildx imagetools create --tag "${IMAGE}:${VERSION}"' in script
    assert "cd k8s/overlays/prod" in script
    assert 'kustomize edit set image "school-payments=${IMAGE}:${VERSION}"' in script
    assert 'git tag -a "v${VERSION}"' in script
    # The version check in the workflow accepts X.Y.Z only.
    pattern = re.search(r'\[\[ "\$VERSION" =~ (\S+) \]\]', script).group(1)
    assert re.fullmatch(pattern.strip("^$"), "1.4.2") and not re.fullmatch(pattern.strip("^$"), "v1.4.2")


@pytest.mark.parametrize("path", sorted(Path(REPO, ".github", "workflows").glob("*.yml")), ids=lambda p: p.name)
def test_workflows_pin_action_versions_and_limit_permissions(path):
    data = workflow(path.name)
    assert "permissions" in data
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert re.search(r"@v\d+$", step["uses"]), step["uses"]
