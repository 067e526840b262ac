# Loaded by pytest for everything under the repo: tests/, solutions/ and lessons/.
pytest_plugins = ["minillama.course.pytest_plugin"]
