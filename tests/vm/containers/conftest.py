from tests.fixtures.image import built_image  # noqa: F401  (shared session fixture)
