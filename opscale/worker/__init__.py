"""The reference operator worker (`opscale worker`): the stand-in engine process agents launch."""
