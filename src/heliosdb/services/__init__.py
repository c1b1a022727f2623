"""Protocol-free data models; every interface calls these, none sends SQL itself."""
