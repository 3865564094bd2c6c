"""The path of the data: image -> faces -> chips -> network -> estimates."""
