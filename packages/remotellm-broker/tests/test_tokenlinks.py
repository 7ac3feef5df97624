"""Connector tokens as identities (``tokenlinks``): caps, name binding, revocation."""

from __future__ import annotations

from remotellm_broker.tokenlinks import Lease, TokenLinks


def _nobody(name: str) -> str | None:
    return None


def test_a_token_holds_at_most_max_links_leases() -> None:
    links = TokenLinks(max_links=2)
    first, second = links.lease("t", "s"), links.lease("t", "s")
    assert first is not None
    assert second is not None
    assert links.lease("t", "s") is None
    assert links.lease("other", "s2") is not None
    links.release(first)
    links.release(first)  # idempotent
    assert links.links("t") == 1
    assert links.lease("t", "s") is not None


def test_the_first_name_sticks_both_ways() -> None:
    links = TokenLinks(max_links=8)
    a, b = links.lease("tok-a", "sa"), links.lease("tok-b", "sb")
    assert a is not None
    assert b is not None
    assert links.bind(a, "box", _nobody) is None
    assert a.connector == "box"
    taken = "connector name 'box' is in use by another connector token"
    assert links.bind(b, "box", _nobody) == taken
    again = links.lease("tok-a", "sa")
    assert again is not None
    assert links.bind(again, "other", _nobody) == (
        "this connector token is bound to connector name 'box'"
    )
    assert links.bind(again, "box", _nobody) is None


def test_a_name_a_token_was_created_with_belongs_to_it() -> None:
    links = TokenLinks(max_links=8)
    thief = links.lease("mallory", "s")
    assert thief is not None

    def owner(name: str) -> str | None:
        return name if name == "gpu-box" else None

    assert links.bind(thief, "gpu-box", owner) == (
        "connector name 'gpu-box' belongs to another connector token"
    )
    rightful = links.lease("gpu-box", "s2")
    assert rightful is not None
    assert links.bind(rightful, "gpu-box", owner) is None


def test_revoke_closes_the_leases_of_invalid_tokens_and_frees_their_names() -> None:
    links = TokenLinks(max_links=8)
    closed: list[Lease] = []
    gone, kept = links.lease("gone", "s1"), links.lease("kept", "s2")
    assert gone is not None
    assert kept is not None
    gone.on_revoke = lambda: closed.append(gone)
    assert links.bind(gone, "box", _nobody) is None
    assert links.revoke(lambda lease: lease.token_name != "gone") == [gone]
    assert closed == [gone]
    assert gone.revoked
    assert not kept.revoked
    assert links.links("gone") == 0
    newcomer = links.lease("new", "s3")
    assert newcomer is not None
    assert links.bind(newcomer, "box", _nobody) is None


def test_forget_drops_bindings_of_deleted_tokens_without_links() -> None:
    links = TokenLinks(max_links=8)
    lease = links.lease("old", "s")
    assert lease is not None
    assert links.bind(lease, "box", _nobody) is None
    links.release(lease)
    links.forget(lambda token: token != "old")
    newcomer = links.lease("new", "s2")
    assert newcomer is not None
    assert links.bind(newcomer, "box", _nobody) is None
    links.forget(lambda token: True)  # existing tokens keep their names
    other = links.lease("other", "s3")
    assert other is not None
    assert links.bind(other, "box", _nobody) is not None


def test_a_lease_never_shows_its_secret() -> None:
    lease = Lease("t", "rct-secret")
    assert "rct-secret" not in repr(lease)


def test_a_check_probe_binds_nothing_so_run_may_follow_it() -> None:
    """`remotellm-connector check` says hello as `<name>-check` with no models: before this,
    a check run first bound the token to `gpu-check` and `run --name gpu` was refused."""
    links = TokenLinks(max_links=8)
    probe = links.lease("tok", "s")
    assert probe is not None
    assert links.bind(probe, "gpu-check", _nobody, probe=True) is None
    real = links.lease("tok", "s")
    assert real is not None
    assert links.bind(real, "gpu", _nobody) is None
    again = links.lease("tok", "s")
    assert again is not None
    assert links.bind(again, "gpu-check", _nobody, probe=True) is None
    assert links.bind(again, "other-check", _nobody, probe=True) == (
        "this connector token is bound to connector name 'gpu'"
    )
    thief = links.lease("mallory", "s")
    assert thief is not None
    assert links.bind(thief, "gpu", _nobody, probe=True) == (
        "connector name 'gpu' is in use by another connector token"
    )
