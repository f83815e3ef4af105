"""Token ids and layouts against the protocol's reference values (docs/protocol.md §1)."""

import numpy as np
import pytest

from wvla_gym.model.token_layout import TokenLayout, image_code_from_name, image_name_from_code, reserved_id


def _released(perm_seed=0):
    rng = np.random.default_rng(perm_seed)
    return TokenLayout.worldvla(4 + rng.permutation(8192))


def test_released_special_ids():
    lay = _released()
    assert lay.vocab_size == 65536
    assert (lay.boi_id, lay.eoi_id, lay.row_end_id) == (8197, 8196, 8803)
    assert lay.end_of_turn_id == 8710
    assert (lay.boa_id, lay.eoa_id) == (10004, 15004)
    assert (lay.action_ids.start, lay.action_ids.stop - 1) == (10006, 10261)
    assert sorted(lay.image_ids) == list(range(4, 8196))
    # grid tokens: 256 px -> latent 16 -> 8812; 512 px -> latent 32 -> 8820
    assert lay.grid_token(16) == 8812 and lay.grid_token(32) == 8820
    assert lay.latent_size_from_grid_token(8812) == 16


def test_reserved_rule():
    assert [reserved_id(n) for n in (8706, 8799, 8800, 10000, 15000, 15500)] == [8710, 8803, 8804, 10004, 15004, 15504]


def test_image_seq_len_released():
    lay = _released()
    assert lay.image_seq_len(16, 16) == 276
    assert lay.image_seq_len(32, 32) == 1060


def test_imgimg_names():
    # letters A-J are digits, prefix and last character stripped
    assert image_code_from_name("IMGIMGBAZ") == 10
    assert image_code_from_name("IMGIMGAZ") == 0
    assert image_code_from_name("IMGIMGHBJCZ") == 7192
    assert image_name_from_code(8191) == "IMGIMGIBJBZ"
    for c in (0, 9, 10, 123, 8191):
        assert image_code_from_name(image_name_from_code(c)) == c


def test_permutation_from_vocab():
    vocab = {"<s>": 0, "IMGIMGBZ": 7, "IMGIMGAZ": 5, "IMGIMGCZ": 4, "hello": 9}
    ids = TokenLayout.image_ids_from_vocab(vocab)
    assert ids.tolist() == [5, 7, 4]  # code 0 -> id 5, code 1 -> id 7, code 2 -> id 4
    lay = TokenLayout.worldvla(4 + np.arange(8192))
    assert lay.id_to_code_table()[4] == 0
    with pytest.raises(ValueError, match="cover"):
        TokenLayout.image_ids_from_vocab({"IMGIMGAZ": 4, "IMGIMGCZ": 5})


def test_compact_layout_and_roundtrip():
    lay = TokenLayout.compact(64)
    ids = set(lay.image_ids) | set(lay.action_ids) | {lay.boi_id, lay.eoi_id, lay.boa_id, lay.eoa_id}
    assert len(ids) == 64 + 256 + 4  # disjoint ranges
    assert lay.vocab_size == max(lay.image_ids) + 1
    assert lay.grid_token(5) == lay.grid_base_id + 5  # odd latent sizes are representable
    for layout in (lay, _released(1)):
        back = TokenLayout.from_dict(layout.to_dict())
        assert back == layout
    with pytest.raises(ValueError):
        _released().grid_token(5)  # released grid tokens count pairs of latent rows
