def test_build(node_image, engine):
    print(engine.docker("image", "inspect", node_image, "--format", "{{.Size}} {{.Config.User}}").stdout)
