"""Fixtures: a feedback store with users, a tiny LM for the chat service, a tiny BERT reward trunk, one thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from personal_helpers import ADMIN, save_tiny_bert  # noqa: E402

from rlhf.feedback import ServeConfig, add_labelers, open_database  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def db(tmp_path):
    d = open_database(tmp_path / "feedback.db")
    yield d
    d.close()


@pytest.fixture()
def tokens(db) -> dict[str, str]:
    return add_labelers(db, ["ann", "bob"])


@pytest.fixture()
def chat_cfg(tmp_path, tiny_lm_dir):
    from rlhf.personalize.config import ChatConfig

    return ChatConfig(model=str(tiny_lm_dir), personal_dir=str(tmp_path / "personal"), max_new_tokens=12,
                      temperature=0.0, max_prompt_tokens=96)


@pytest.fixture()
def chat(chat_cfg):
    from rlhf.personalize.serving import ChatService

    svc = ChatService(chat_cfg)
    yield svc
    svc.close()


@pytest.fixture()
def client(db, chat):
    from fastapi.testclient import TestClient

    from rlhf.feedback.web import create_app

    app = create_app(ServeConfig(admin_token=ADMIN), db)
    app.state.chat = chat
    with TestClient(app, follow_redirects=False) as c:
        yield c
