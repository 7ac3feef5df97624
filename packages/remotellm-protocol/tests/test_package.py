import re

import remotellm_protocol
from remotellm_protocol import (
    broker_session,
    codec,
    codes,
    connector_session,
    errors,
    frames,
    limits,
    resume,
    session,
    streams,
    versions,
)


def test_every_public_name_is_importable_from_the_package_root() -> None:
    for name in remotellm_protocol.__all__:
        assert getattr(remotellm_protocol, name) is not None, name


def test_the_root_exports_what_the_modules_offer_for_everyday_use() -> None:
    offered = set().union(
        *(
            m.__all__
            for m in (
                codec,
                codes,
                errors,
                frames,
                limits,
                resume,
                session,
                broker_session,
                connector_session,
                versions,
            )
        )
    )
    # Internals of the handshake and the version names, reachable from their modules.
    assert offered - set(remotellm_protocol.__all__) == {
        "HELLO_MAX_FRAME_BYTES",
        "SUBPROTOCOL_PREFIX",
    }
    assert "StreamState" in remotellm_protocol.__all__
    assert "StreamState" in streams.__all__


def test_the_version_is_a_release_of_major_version_1() -> None:
    assert re.fullmatch(r"1\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+)?", remotellm_protocol.__version__)
