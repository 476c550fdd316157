from auth_service.passwords import hash_password, verify_password


def test_right_password_verifies():
    assert verify_password("hunter2", hash_password("hunter2"))


def test_wrong_password_is_refused():
    assert not verify_password("hunter3", hash_password("hunter2"))


def test_same_password_hashes_differently():
    assert hash_password("x") != hash_password("x")
