"""Your own app behind the app contract: the notes example (examples/notes) deployed by the real
app role with only the contract variables changed, replacing the demo through the release gate;
the preflight refusing images that break the contract before anything changes; and the same
app pulled from a TLS registry with htpasswd auth, pinned by digest.

The role runs on localhost against this engine (yourapp_lib says what it writes and where).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import BASE_IMAGE, PREFIX, REPO, Stack, docker
from nginx_extra import extra_nginx
from yourapp_lib import Play, RoleRun, build, push, registry

pytestmark = pytest.mark.containers
NOTES = f"{PREFIX}/yourapp-notes:test"
BAD_ROOT = f"{PREFIX}/yourapp-notes-root:test"
BAD_NOHC = f"{PREFIX}/yourapp-notes-nohc:test"
VARIANT = f"{PREFIX}/yourapp-notes-registry:test"
TOKEN = secrets.token_urlsafe(16)
EXAMPLE_VARS = REPO / "examples" / "notes" / "group_vars" / "prodstack.yml"
# What the example's inventory file sets, with this run's token. Its build folder is
# passed as a path here (stack_images builds it in `deployed`).
_EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_VARS.read_text())
NOTES_VARS: dict[str, Any] = {
    **{k: v for k, v in _EXAMPLE.items() if k != "stack_images_app_build_dir"},
    "app_secrets": {"notes_token": TOKEN},
}
TITLE = NOTES_VARS["app_env"]["NOTES_TITLE"]
NOTES_UID = int(NOTES_VARS["app_uid"])


@pytest.fixture(scope="module")
def role(stack: Stack, report: Callable[[str], None]) -> Iterator[RoleRun]:
    listed = docker("ps", "-a", "--filter", "label=prodstack.role=app", "--format", "{{.Names}}")
    others = listed.stdout.split()
    if others:  # the role stops every running release it finds by this label
        pytest.skip(f"containers labelled prodstack.role=app exist on this engine: {others}")
    t0 = time.monotonic()
    build(NOTES, context=REPO / "examples" / "notes")
    build(BAD_ROOT, dockerfile=f"FROM {NOTES}\nUSER root\n")
    build(BAD_NOHC, dockerfile=f"FROM {NOTES}\nHEALTHCHECK NONE\n")
    report(f"yourapp: example images built in {time.monotonic() - t0:.1f} s")
    default_conf = (REPO / "nginx" / "default.conf").read_text()
    with extra_nginx(stack, "yourapp", {"default.conf": default_conf}) as (name, base, conf_dir):
        run = RoleRun(stack, name, conf_dir, base)
        run.images += [NOTES, BAD_ROOT, BAD_NOHC, VARIANT]
        try:
            yield run
        finally:
            run.cleanup()


def health(name: str, timeout: float = 40) -> str:
    """Docker's health status once it has left `starting` (the gate probes /health itself
    and may pass before Docker's first check, which runs after one interval)."""
    deadline = time.monotonic() + timeout
    while True:
        status = str(Stack.inspect(name)["State"]["Health"]["Status"])
        if status != "starting" or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def untouched(role: RoleRun) -> None:
    """Nothing the role changes exists: no release, no secret file, no release switch."""
    assert role.releases() == []
    assert list(role.secrets_dir.iterdir()) == []
    assert not (role.conf_dir / "app-release.inc").exists()


def test_preflight_refuses_an_image_running_as_root(role: RoleRun) -> None:
    play = role.preflight(app_image=BAD_ROOT, **NOTES_VARS)
    assert play.rc != 0, play.output[-2000:]
    assert f"app_image: {BAD_ROOT} runs as USER 'root'" in play.output, play.output[-3000:]
    assert "numeric non-root USER" in play.output
    untouched(role)


def test_preflight_refuses_an_image_without_healthcheck(role: RoleRun) -> None:
    play = role.preflight(app_image=BAD_NOHC, **NOTES_VARS)
    assert play.rc != 0, play.output[-2000:]
    assert "declares no HEALTHCHECK and app_healthcheck_command is empty" in play.output, play.output[-3000:]
    untouched(role)
    # The role's healthcheck variable answers for the image: accepted.
    ok = role.preflight(
        app_image=BAD_NOHC,
        app_healthcheck_command=["CMD", "python3", "/opt/notes/healthcheck.py"],
        **NOTES_VARS,
    )
    assert ok.rc == 0, ok.output[-3000:]


def test_preflight_refuses_a_build_folder_breaking_the_contract(role: RoleRun, tmp_path: Path) -> None:
    """stack_images_app_build_dir: the Dockerfile is read on the controller, before any build."""
    cases = {
        "USER root": "runs as USER 'root'",
        "USER notes": "runs as USER 'notes'",
        f"USER {NOTES_UID}\nHEALTHCHECK NONE": "declares no HEALTHCHECK (none)",
    }
    for i, (lines, expected) in enumerate(cases.items()):
        folder = tmp_path / f"app{i}"
        folder.mkdir()
        (folder / "Dockerfile").write_text(f"FROM {NOTES}\n{lines}\n")
        play = role.preflight(
            role="stack_images",
            tasks_from="preflight_app",
            stack_images_app_build_dir=str(folder),
            **NOTES_VARS,
        )
        assert play.rc != 0, play.output[-2000:]
        assert f"stack_images_app_build_dir: {folder}/Dockerfile" in play.output, play.output[-3000:]
        assert expected in play.output, (lines, play.output[-3000:])
    ok = role.preflight(
        role="stack_images",
        tasks_from="preflight_app",
        stack_images_app_build_dir=str(REPO / "examples" / "notes"),
        **NOTES_VARS,
    )
    assert ok.rc == 0, ok.output[-3000:]
    untouched(role)


def build_with_stack_images(role: RoleRun) -> Play:
    """The stack_images role as site.yml runs it, building the app from examples/notes."""
    return role.run(
        [{"ansible.builtin.include_role": {"name": "stack_images"}}],
        {
            "stack_images_build": ["app"],
            "stack_images_app_build_dir": str(REPO / "examples" / "notes"),
            "stack_images_repository": f"{PREFIX}-yourapp",
            "stack_images_base_image": BASE_IMAGE,
            "stack_images_archive_dir": str(role.root / "archives"),
            "stack_images_target_dir": str(role.root / "load"),
        },
    )


@pytest.fixture(scope="module")
def deployed(role: RoleRun, stack: Stack, report: Callable[[str], None]) -> dict[str, Any]:
    """The demo deployed by the role; then the notes example, built by stack_images from its
    folder and deployed by changing only the contract variables."""
    t0 = time.monotonic()
    demo = role.deploy(app_image=stack.images["app"])
    assert demo.rc == 0, demo.output[-4000:]
    demo_release = role.live_release()
    t1 = time.monotonic()
    built = build_with_stack_images(role)
    assert built.rc == 0, built.output[-4000:]
    refs = docker("images", f"{PREFIX}-yourapp/app", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    role.images += refs
    assert len(refs) == 1, refs
    t2 = time.monotonic()
    notes = role.deploy(app_image=refs[0], **NOTES_VARS)
    assert notes.rc == 0, notes.output[-4000:]
    t3 = time.monotonic()
    report(
        f"yourapp: demo release deployed in {t1 - t0:.1f} s, notes built, shipped and loaded by "
        f"stack_images in {t2 - t1:.1f} s, cut over in {t3 - t2:.1f} s"
    )
    return {"demo_release": demo_release, "notes_release": role.live_release(), "image": refs[0]}


def test_stack_images_builds_the_folder_once(role: RoleRun, deployed: dict[str, Any]) -> None:
    """The tag is a hash of the folder: a second run finds it and builds, ships nothing."""
    assert deployed["image"].rsplit(":", 1)[1] != "latest"
    again = build_with_stack_images(role)
    assert again.rc == 0 and again.recap_changed() == 0, again.output[-4000:]


def test_notes_replaces_the_demo(role: RoleRun, stack: Stack, deployed: dict[str, Any]) -> None:
    release = deployed["notes_release"]
    assert release != deployed["demo_release"]
    name = f"{role.container_prefix}-{release}"
    info = Stack.inspect(name)
    assert info["Config"]["Image"] == deployed["image"]
    assert health(name) == "healthy"
    assert info["Config"]["User"] == str(NOTES_UID)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    # Served through NGINX: the example's own answer, from the release the switch named.
    base = role.base_url
    resp = requests.get(f"{base}/", timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"app": "notes", "title": TITLE, "notes": 0}
    assert resp.headers["X-Prodstack-Release"] == release
    # The secret file is what the app uses: a write needs its token.
    assert requests.put(f"{base}/notes/a", data="x", timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.put(f"{base}/notes/a", data="hello", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{base}/notes/a", timeout=5).json() == {"key": "a", "note": "hello"}
    # The demo is gone: no container of the demo image runs as a release any more.
    running = docker("ps", "--filter", "label=prodstack.role=app", "--format", "{{.Image}} {{.Names}}").stdout
    assert [line.split()[1] for line in running.splitlines()] == [name], running
    assert stack.images["app"] not in running


def test_notes_secret_is_readable_only_by_its_uid(role: RoleRun, deployed: dict[str, Any]) -> None:
    host_file = role.secrets_dir / "notes_token.app"
    st = host_file.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOTES_UID, NOTES_UID, 0o400)
    name = f"{role.container_prefix}-{deployed['notes_release']}"
    inside = docker("exec", name, "stat", "-c", "%u %a", "/run/secrets/notes_token").stdout.split()
    assert inside == [str(NOTES_UID), "400"]
    assert docker("exec", name, "cat", "/run/secrets/notes_token").stdout.strip() == TOKEN
    other = docker("exec", "-u", str(NOTES_UID + 1), name, "cat", "/run/secrets/notes_token", check=False)
    assert other.returncode != 0 and "Permission denied" in other.stderr, other


def test_a_second_converge_changes_nothing(role: RoleRun, deployed: dict[str, Any]) -> None:
    again = role.deploy(app_image=deployed["image"], **NOTES_VARS)
    assert again.rc == 0, again.output[-4000:]
    assert again.recap_changed() == 0, again.output[-4000:]
    assert role.live_release() == deployed["notes_release"]


def test_registry_pull_pinned_by_digest(
    role: RoleRun, stack: Stack, deployed: dict[str, Any], tmp_path: Path, report: Callable[[str], None]
) -> None:
    """The app image from a registry (TLS, htpasswd), logged in with the role's variables and
    pulled by digest on the target; a second run pulls nothing and changes nothing."""
    build(VARIANT, dockerfile=f'FROM {NOTES}\nLABEL yourapp.variant="registry"\n')
    user, password = "yourapp", secrets.token_urlsafe(12)
    assert stack.subnet is not None
    gateway = str(next(stack.subnet.hosts()))  # Docker gives the bridge the subnet's first address
    with registry(tmp_path / "registry", user, password, gateway) as (host, ca):
        registry_vars = {
            **NOTES_VARS,
            "app_image": f"{host}/yourapp/notes:1",
            "app_image_pull": True,
            "app_registry": host,
            "app_registry_username": user,
            "app_registry_password": password,
            "app_registry_ca_cert": ca,
        }
        certs = Path("/etc/docker/certs.d") / host
        certs_parent_existed = certs.parent.exists()
        try:
            # Without the CA Docker refuses the registry; a wrong password fails the login.
            # Both before any release changes, naming the cause.
            no_ca = role.deploy(**{**registry_vars, "app_registry_ca_cert": ""})
            assert no_ca.rc != 0, no_ca.output[-3000:]
            assert "certificate signed by unknown authority" in no_ca.output, no_ca.output[-3000:]
            wrong = f"wrong-{password}"
            bad = role.deploy(**{**registry_vars, "app_registry_password": wrong})
            assert bad.rc != 0, bad.output[-3000:]
            named = "app_registry_username / app_registry_password: Logging into"
            assert named in bad.output and wrong not in bad.output, bad.output[-3000:]
            assert role.live_release() == deployed["notes_release"]
            # The role has made the engine trust the CA (the same engine pushes here).
            assert (certs / "ca.crt").read_text().strip() == ca.strip()
            role.images.append(f"{host}/yourapp/notes:1")  # removed also when the push fails
            pinned = push(VARIANT, host, "yourapp/notes", user, password, tmp_path / "pusher")
            role.images.append(pinned)
            # Off the engine: the deploy must fetch it from the registry.
            docker("rmi", "--no-prune", VARIANT, f"{host}/yourapp/notes:1")
            assert docker("image", "inspect", pinned, check=False).returncode != 0
            registry_vars["app_image"] = pinned
            t0 = time.monotonic()
            play = role.deploy(**registry_vars)
            assert play.rc == 0, play.output[-4000:]
            report(f"yourapp: registry image pulled by digest and cut over in {time.monotonic() - t0:.1f} s")
            release = role.live_release()
            assert release != deployed["notes_release"]
            info = Stack.inspect(f"{role.container_prefix}-{release}")
            assert info["Config"]["Image"] == pinned
            assert info["Config"]["Labels"].get("yourapp.variant") == "registry"
            assert requests.get(f"{role.base_url}/", timeout=5).json()["app"] == "notes"
            again = role.deploy(**registry_vars)
            assert again.rc == 0 and again.recap_changed() == 0, again.output[-4000:]
        finally:
            # The role wrote it for the registry of this test only.
            if certs.is_dir():
                for f in certs.iterdir():
                    f.unlink()
                certs.rmdir()
            if not certs_parent_existed and certs.parent.is_dir() and not any(certs.parent.iterdir()):
                certs.parent.rmdir()


def test_healthcheck_command_answers_for_an_image_without_one(
    role: RoleRun, deployed: dict[str, Any]
) -> None:
    """An image with no HEALTHCHECK runs with app_healthcheck_command, through the same gate."""
    command = ["CMD-SHELL", "python3 /opt/notes/healthcheck.py && test -r /run/secrets/notes_token"]
    play = role.deploy(app_image=BAD_NOHC, app_healthcheck_command=command, **NOTES_VARS)
    assert play.rc == 0, play.output[-4000:]
    name = f"{role.container_prefix}-{role.live_release()}"
    info = Stack.inspect(name)
    assert info["Config"]["Image"] == BAD_NOHC
    assert info["Config"]["Healthcheck"]["Test"] == command
    assert health(name) == "healthy"
    assert requests.get(f"{role.base_url}/", timeout=5).json()["app"] == "notes"
