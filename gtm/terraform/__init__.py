"""The Terraform provider (`terraform-provider-gtm`): the configuration as resources.

Built on the PyPI package ``tf`` (plugin protocol v6). Every resource edits one entry
of the control plane's document (or a certificate, or a token) through the control API;
see terraform/README.md for the resources, their import IDs and the install.
"""
