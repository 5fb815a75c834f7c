struct pci_dev { unsigned short vendor, device; };
static const unsigned short pch_acs_ids[] = {
	0x3b42, 0x3b43, 0x3b44, 0x3b45, 0x3b46, 0x3b47, 0x3b48, 0x3b49,
	0x3b4a, 0x3b4b, 0x3b4c, 0x3b4d, 0x3b4e, 0x3b4f, 0x3b50, 0x3b51,
};
int is_pch(struct pci_dev *dev)
{
	int i;

	if (dev->vendor != 0x8086)
		return 0;
	for (i = 0; i < sizeof(pch_acs_ids) / sizeof(pch_acs_ids[0]); i++)
		if (pch_acs_ids[i] == dev->device)
			return 1;
	return 0;
}
